"""Built-in callbacks: ``tensorboard`` (a logger) and ``ema`` (an exponential moving average of the weights).

Neither is on unless a recipe names it in ``[[callbacks]]``. TensorBoard is imported
only when the ``tensorboard`` callback is built, so ``import mlrun`` and ``mlrun list``
stay fast without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Ge, Gt, Lt

from mlrun import Callback, hookimpl

if TYPE_CHECKING:
    import torch

    from mlrun.callbacks import EpochInfo, FitEnd, RunInfo, StepInfo

#: The folder of the run folder that holds the TensorBoard event files.
TENSORBOARD_DIR = "tensorboard"
#: The EMA's averaged weights, written when the run ends (a state dict for the recipe's model).
EMA_WEIGHTS_FILE = "ema.pt"
INSTALL_TENSORBOARD = "pip install 'torch-mlrun[tensorboard]' (or: pip install tensorboard)"


def _tensorboard_missing(params: Mapping[str, Any]) -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError(f"the tensorboard callback needs the tensorboard package: {INSTALL_TENSORBOARD}")


class TensorBoardLogger:
    """Writes scalars, the recipe and (optionally) hparams to ``<run folder>/tensorboard/``."""

    def __init__(self, every_n_steps: int, hparams: bool) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard missing (or broken): mlrun reports a ValueError as bad input
            raise ValueError(f"it needs the tensorboard package ({exc}): {INSTALL_TENSORBOARD}") from exc
        self.writer_class = SummaryWriter
        self.every_n_steps, self.hparams = every_n_steps, hparams
        self.writer: Any = None
        self.global_step = 0  # the last step trained; a resumed run starts a new file from it
        self.last: dict[str, float] = {}  # the last epoch's figures, for hparams
        # What was logged at global_step. A checkpoint can fall between a step's scalars and its
        # epoch's (a step checkpoint on an epoch's last step): a resume purges the whole step and
        # writes these again, so every scalar of that step is in TensorBoard exactly once.
        self.at_step: dict[str, float] = {}

    def on_fit_start(self, run: RunInfo) -> None:
        # On resume, purge_step tells TensorBoard to drop what an earlier file holds from this
        # step on: the steps logged after the last checkpoint are trained (and logged) again.
        resumed = self.global_step > 0
        purge = self.global_step if resumed else None
        self.writer = self.writer_class(log_dir=str(run.run_dir / TENSORBOARD_DIR), purge_step=purge)
        for tag, value in self.at_step.items():  # purged with the step: written again
            self.writer.add_scalar(tag, value, self.global_step)
        recipe = run.run_dir / "recipe.toml"
        if not resumed and recipe.is_file():  # indented: TensorBoard's text panel reads Markdown
            text = "".join(f"    {line}\n" for line in recipe.read_text().splitlines())
            self.writer.add_text("recipe", text, 0)

    def _add(self, tag: str, value: float) -> None:
        """One scalar at the current step, remembered for a resume (see ``at_step``)."""
        self.writer.add_scalar(tag, value, self.global_step)
        self.at_step[tag] = value

    def on_step_end(self, run: RunInfo, step: StepInfo) -> None:
        self.global_step, self.at_step = step.global_step, {}
        if step.global_step % self.every_n_steps:
            return
        self._add("train/loss", step.loss)
        self._add("train/lr", step.lr)
        if step.grad_norm is not None:
            self._add("train/grad_norm", step.grad_norm)

    def on_epoch_end(self, run: RunInfo, epoch: EpochInfo) -> None:
        # x axis: the global step at the epoch's end, as for the per-step scalars.
        self._add("epoch/train_loss", epoch.train_loss)
        for name, value in epoch.figures.items():
            self._add(f"epoch/{name}", value)
        self._add("epoch/lr", epoch.lr)
        self._add("epoch/epoch", epoch.epoch)
        self.last = {"train_loss": epoch.train_loss, **epoch.figures}
        self.writer.flush()

    def on_fit_end(self, run: RunInfo, end: FitEnd) -> None:
        if self.writer is None:
            return
        if self.hparams and end.status in ("completed", "stopped"):
            self._write_hparams(run, end)
        self.writer.close()

    def _write_hparams(self, run: RunInfo, end: FitEnd) -> None:
        from torch.utils.tensorboard.summary import hparams

        flat = {k: v for k, v in _flatten(run.recipe).items() if isinstance(v, (int, float, str, bool))}
        best = {k: v for k, v in (end.best or {}).items() if k.startswith("best_")}
        figures = {f"hparams/{k}": float(v) for k, v in {**self.last, **best}.items() if isinstance(v, (int, float))}
        experiment, start, finish = hparams(flat, figures)
        for summary in (experiment, start, finish):
            self.writer.file_writer.add_summary(summary)
        for tag, value in figures.items():
            self.writer.add_scalar(tag, value, self.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "last": dict(self.last), "at_step": dict(self.at_step)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step, self.last = int(state["global_step"]), dict(state.get("last", {}))
        self.at_step = dict(state.get("at_step", {}))


def tensorboard(every_n_steps: Annotated[int, Ge(1)] = 50, hparams: bool = False) -> TensorBoardLogger:
    """Log to TensorBoard: per-step loss, lr (and grad_norm when clipping) every ``every_n_steps``; each epoch's figures.

    ``every_n_steps`` is 50 by default, as in Lightning: a scalar costs about 50 µs, so
    logging every step would add several per cent to a 1 ms step.

    ``hparams``: at the end of a completed run, also the flattened recipe and the selected
    epoch's figures (TensorBoard's HParams panel).
    """
    return TensorBoardLogger(every_n_steps, hparams)


class EMA:
    """An exponential moving average of the weights, updated after every optimizer step.

    ``shadow = d * shadow + (1 - d) * weights`` for floating-point parameters and buffers
    (other buffers, such as BatchNorm's batch count, are copied). With ``warmup_steps``
    the decay ramps up linearly: ``d = decay * min(1, n / warmup_steps)`` after ``n``
    updates, so the average does not drag the first random weights along.
    """

    def __init__(self, decay: float, warmup_steps: int, use_for_evaluation: bool) -> None:
        self.decay, self.warmup_steps, self.use_for_evaluation = decay, warmup_steps, use_for_evaluation
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] | None = None
        self.model: torch.nn.Module | None = None

    def on_fit_start(self, run: RunInfo) -> None:
        self.model = run.model
        if self.shadow is None:  # a resumed run has its average from the checkpoint
            self.shadow = {k: v.detach().clone() for k, v in run.model.state_dict().items()}

    def on_step_end(self, run: RunInfo, step: StepInfo) -> None:
        assert self.model is not None and self.shadow is not None
        decay = self.decay
        if self.warmup_steps:
            decay *= min(1.0, self.updates / self.warmup_steps)
        shadow = self.shadow
        for name, value in self.model.state_dict().items():
            average = shadow[name]
            if average.is_floating_point():
                average.mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:
                average.copy_(value)
        self.updates += 1

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """With ``use_for_evaluation``: the model holds the averaged weights inside, its own after."""
        if not self.use_for_evaluation or self.model is None or self.shadow is None:
            yield
            return
        own = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            self.model.load_state_dict(own)

    def on_fit_end(self, run: RunInfo, end: FitEnd) -> None:
        if run.rank == 0 and self.shadow is not None:
            import torch

            path = run.run_dir / EMA_WEIGHTS_FILE
            partial = path.with_name(
                f".{path.name}.partial.tmp"
            )  # never a half-written ema.pt (stale ones are cleaned up)
            torch.save(dict(self.shadow), partial)
            os.replace(partial, path)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        shadow = state["shadow"]
        self.shadow = None if shadow is None else {k: v.clone() for k, v in shadow.items()}


def ema(
    decay: Annotated[float, Gt(0), Lt(1)] = 0.999,
    warmup_steps: Annotated[int, Ge(0)] = 0,
    use_for_evaluation: bool = False,
) -> EMA:
    """Exponential moving average of the weights; ``ema.pt`` at the end.

    ``use_for_evaluation``: every epoch's evaluation, ``best.pt``, ``model.pt`` and the
    final test use the averaged weights (training itself always uses the model's own).
    """
    return EMA(decay, warmup_steps, use_for_evaluation)


def sweep_trial(trial: Annotated[int, Ge(0)] = 0) -> Any:
    """Report a sweep trial's objective per epoch to its study (``mlrun sweep`` adds it to each trial)."""
    from mlrun.sweep.callback import TrialReporter

    return TrialReporter(trial)


def _optuna_missing(params: Mapping[str, Any]) -> None:
    if importlib.util.find_spec("optuna") is None:
        raise ValueError("the sweep_trial callback needs Optuna: pip install 'torch-mlrun[sweep]'")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                flat.update(_flatten(item, f"{prefix}{key}.{index}.") if isinstance(item, Mapping) else {})
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@hookimpl
def register_callbacks() -> list[Callback]:
    return [
        Callback(
            "tensorboard",
            tensorboard,
            "TensorBoard logger: losses, figures, lr, the recipe, in <run>/tensorboard/",
            validate=_tensorboard_missing,
            logger=True,
            on_error="warn",
        ),
        Callback(
            "ema", ema, "exponential moving average of the weights (ema.pt; optionally evaluated)", all_ranks=True
        ),
        Callback(
            "sweep_trial",
            sweep_trial,
            "mlrun sweep's own: reports each epoch's objective, stops a pruned trial",
            validate=_optuna_missing,
        ),
    ]
