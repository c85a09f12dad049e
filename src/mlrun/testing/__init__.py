"""A conformance kit for plugin authors, like scikit-learn's ``check_estimator``.

``check_plugin("mlrun_acme")`` builds every component a plugin registers and checks that
it keeps mlrun's conventions; ``plugin_checks("mlrun_acme")`` gives the same checks one
by one, for ``pytest.mark.parametrize``. The plugin is named by its entry point,
distribution or module name, or given as the module itself. Per component:

- every kind: its hooks are marked ``@hookimpl``; its parameters' defaults satisfy
  their own annotations, and values outside the annotated bounds (``Gt``, ``Ge``, ``Lt``,
  ``Le``, ``MinLen``, ``MaxLen``, on numbers and on list items) are refused;
- a model: on a sample batch its output is ``N x classes``, finite, and of the declared
  kind: ``log_probs`` exponentiate to rows summing to 1, ``probs`` lie in [0, 1] with rows
  summing to 1, ``logits`` are not probabilities; every choice of a configurable output;
- a criterion: a finite scalar loss with finite gradients, for each output kind it expects;
- a transform's batch version: on a batch, what the per-sample transform gives on each
  sample (random ones: see :mod:`mlrun.testing.checks` for how they must draw);
- a dataset: ``dataset[i]`` are ``(sample, label)`` pairs, and ``tensors()`` give the same
  samples and labels (the first few of each split);
- an optimizer: a step changes the weights; a scheduler: it steps, its rates stay finite.

Sample images are ``images`` when given (uint8, ``N x H x W`` or ``N x H x W x C``), else
the first raw samples of a dataset the plugin registers, else random 28x28 grayscale ones.
A component whose required parameters have no default is skipped (and listed in the
report) unless ``params`` gives them, by name: ``params={"normalize": {"mean": [0.5],
"std": [0.5]}}`` (``"transform:normalize"`` when two kinds share a name).
"""

from __future__ import annotations

import importlib
import re
import unittest
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, NamedTuple

from mlrun.components import Component
from mlrun.hookspecs import PROJECT_NAME
from mlrun.params import REQUIRED, SignatureError, format_value, parameters, to_jsonable, validate_params
from mlrun.testing.checks import behaviour_of
from mlrun.testing.support import Context, components_of, failing, out_of_range, values_for

ENTRY_POINT_GROUP = "mlrun"
Params = Mapping[str, Mapping[str, Any]]


class ConformanceError(AssertionError):
    """Every failed check of a plugin, each naming the component and what was expected."""

    def __init__(self, plugin: str, failures: list[tuple[str, str]]) -> None:
        self.plugin = plugin
        self.failures = failures
        listing = "\n".join(f"  - {check}: {message}" for check, message in failures)
        super().__init__(f"plugin {plugin}: {len(failures)} conformance check(s) failed:\n{listing}")


class Check(NamedTuple):
    """One check: ``id`` such as ``model:small_cnn:output``; ``run()`` raises on failure."""

    id: str
    run: Callable[[], None]


@dataclass(frozen=True)
class Report:
    """What :func:`check_plugin` ran: the checks that passed and those skipped, with why."""

    plugin: str
    passed: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        skipped = "".join(f"\n  skipped {check}: {why}" for check, why in self.skipped)
        return f"plugin {self.plugin}: {len(self.passed)} checks passed, {len(self.skipped)} skipped{skipped}"


def check_plugin(plugin: Any, *, params: Params | None = None, images: Any = None) -> Report:
    """Run every check on ``plugin``; raise :class:`ConformanceError` listing all failures."""
    label = plugin if isinstance(plugin, str) else getattr(plugin, "__name__", repr(plugin))
    passed, skipped, failures = [], [], []
    for check in plugin_checks(plugin, params=params, images=images):
        try:
            check.run()
        except unittest.SkipTest as exc:
            skipped.append((check.id, str(exc)))
        except AssertionError as exc:
            failures.append((check.id, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a component that crashes is a failure to list, too
            failures.append((check.id, f"raised {type(exc).__name__}: {exc}"))
        else:
            passed.append(check.id)
    if failures:
        raise ConformanceError(label, failures)
    return Report(label, tuple(passed), tuple(skipped))


def plugin_checks(plugin: Any, *, params: Params | None = None, images: Any = None) -> list[Check]:
    """The checks of ``plugin``, one :class:`Check` each, for ``pytest.mark.parametrize``.

    A check that cannot run raises :class:`unittest.SkipTest` (pytest shows it skipped).
    A broken hook becomes a failing check, so collecting the tests never fails.
    """
    from mlrun import CONFLICT

    if CONFLICT:
        raise ImportError(CONFLICT)
    components, problems = [], []
    for module in _resolve(plugin):
        found, trouble = components_of(module)
        components += found
        problems += trouble
    checks = [Check(where, failing(message)) for where, message in problems]
    context = Context(components, lambda c: _given(c, params or {}), images)
    for component in components:
        checks += _checks_for(component, params or {}, context)
    return checks


def _checks_for(component: Component, params: Params, context: Context) -> list[Check]:
    prefix = f"{component.kind}:{component.name}"
    given = _given(component, params)
    checks = [Check(f"{prefix}:parameters", lambda: _check_parameters(component, given))]
    try:
        bounded = any(out_of_range(p.annotation, p.default) for p in parameters(component))
    except SignatureError:
        return checks  # its parameters check says why; nothing else can be built
    if bounded:
        checks.append(Check(f"{prefix}:out-of-range", lambda: _check_bounds(component, given)))
    behaviour = behaviour_of(component)
    if behaviour is not None:
        name, check = behaviour

        def run() -> None:
            check(component, values_for(component, given), context)

        checks.append(Check(f"{prefix}:{name}", run))
    return checks


def _given(component: Component, params: Params) -> dict[str, Any]:
    qualified = params.get(f"{component.kind}:{component.name}")
    return dict(qualified if qualified is not None else params.get(component.name, {}))


def _check_parameters(component: Component, given: Mapping[str, Any]) -> None:
    """The signature describes recipe parameters, and every default satisfies its own annotation."""
    where = f"{component.kind} '{component.name}'"
    try:
        params = parameters(component)
    except SignatureError as exc:
        raise AssertionError(str(exc)) from None
    for param in params:
        if param.default is REQUIRED:
            continue
        _, problems = validate_params(component, {param.name: to_jsonable(param.default)})
        mine = [message for key, message in problems if _is_key(key, param.name)]
        if mine:
            raise AssertionError(
                f"{where}: the default {param.name} = {format_value(param.default)} breaks its own annotation "
                f"({param.type_text}): {mine[0]}; change the default or the annotation"
            )
    values_for(component, given, required=False)


def _check_bounds(component: Component, given: Mapping[str, Any]) -> None:
    """A value outside each annotated bound is refused, as the annotation promises."""
    where = f"{component.kind} '{component.name}'"
    valid = {p.name: to_jsonable(p.default) for p in parameters(component) if p.default is not REQUIRED}
    valid.update(to_jsonable(dict(given)))
    for param in parameters(component):
        for bound, bad in out_of_range(param.annotation, valid.get(param.name)):
            _, problems = validate_params(component, {**valid, param.name: bad})
            if not any(_is_key(key, param.name) for key, _ in problems):
                raise AssertionError(
                    f"{where}: {param.name} is annotated {param.type_text}, yet {param.name} = "
                    f"{format_value(bad)} ({bound} broken) was accepted"
                )


def _is_key(key: str, name: str) -> bool:
    return key == name or key.startswith(f"{name}.")


def _resolve(plugin: Any) -> list[Any]:
    """The plugin objects (modules) that ``plugin`` names: entry point, distribution or module."""
    if not isinstance(plugin, str):
        return [plugin]
    points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    wanted = _normalized(plugin)
    chosen = (
        [ep for ep in points if ep.name == plugin]
        or [ep for ep in points if ep.dist is not None and _normalized(ep.dist.name) == wanted]
        or [ep for ep in points if ep.module == plugin or ep.module.startswith(f"{plugin}.")]
    )
    if chosen:
        unique = {ep.value: ep for ep in chosen}  # the same distribution may be seen twice on sys.path
        return [ep.load() for ep in unique.values()]
    try:
        return [importlib.import_module(plugin)]
    except ModuleNotFoundError as exc:
        if exc.name is None or not (plugin == exc.name or plugin.startswith(f"{exc.name}.")):
            raise  # the plugin was found, but something it imports is missing
        installed = ", ".join(sorted(f"{ep.name} ({ep.dist.name if ep.dist else '?'})" for ep in points))
        raise LookupError(
            f"no plugin {plugin!r}: it is neither an entry point of the '{PROJECT_NAME}' group, an installed "
            f"distribution with one, nor an importable module (installed plugins: {installed or 'none'}); "
            "is the plugin installed (`pip install -e .`) in this environment?"
        ) from None


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


__all__ = ["Check", "ConformanceError", "Report", "check_plugin", "plugin_checks"]
