"""How training stops before its last epoch: on request (a signal), or on a broken loss.

Either way the run folder keeps a good checkpoint: a signal stops after the current
step and saves one; a non-finite loss stops before the weights are touched, so the
last checkpoint is still good.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlrun.errors import MlrunError

Echo = Callable[[str], None]


class Interrupted(MlrunError):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    def __init__(self, message: str, exit_code: int, *, problems: list[str]) -> None:
        super().__init__(message, problems=problems)
        self.exit_code = exit_code


class NonFiniteLoss(MlrunError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class StopRequests:
    """SIGINT/SIGTERM/SIGHUP ask training to stop at the next safe point; a second one exits at once."""

    #: SIGHUP too: a closed terminal or SSH session should stop a run as cleanly as Ctrl-C.
    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, echo: Echo) -> None:
        self.signal: int | None = None
        #: Training is over and the last files are being written: a signal changes nothing now.
        self.finishing = False
        self.echo = echo
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _request(self, signum: int, frame: Any) -> None:
        self.signal = signum
        name = signal.Signals(signum).name
        if self.finishing:
            self.echo(f"{name} received: training is complete; writing the last files")
        else:
            self.echo(
                f"{name} received: stopping after this step and saving a checkpoint (send it again to exit at once)"
            )
        # A second signal takes the default path: KeyboardInterrupt / termination. Files
        # are only ever replaced by atomic renames, so nothing is left half-written.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


def non_finite_advice(run_dir: Path, lr: float) -> list[str]:
    """What to do after a NaN: resume from the checkpoint if there is one, else start again."""
    from mlrun.checkpoint import CHECKPOINT_FILE  # torch: only once a loss broke

    smaller = f"optimizer.lr={lr / 10:g}"
    path = run_dir / CHECKPOINT_FILE
    if path.is_file():
        return [
            f"the last good checkpoint is kept: {path}",
            f"resume it with a smaller learning rate: mlrun resume {run_dir} {smaller} --force",
        ]
    return [
        "no checkpoint was written yet: the loss broke before the first one",
        f"start again with a smaller learning rate: mlrun {run_dir / 'recipe.toml'} {smaller}",
    ]
