"""``python -m mlrun`` is the ``mlrun`` command."""

import sys

from mlrun.cli import main

sys.exit(main())
