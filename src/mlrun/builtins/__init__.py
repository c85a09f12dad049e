"""The built-in plugins. Each module uses only the public plugin API (``mlrun.hookimpl``
and the component descriptors), exactly as a third-party plugin would."""
