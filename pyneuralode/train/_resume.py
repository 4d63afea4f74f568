"""Start a training run in a directory, or resume it from its checkpoint — one rule for every problem."""

from __future__ import annotations

from pathlib import Path

from .._errors import SpecError
from ._checkpoint import load_checkpoint
from ._metrics import MetricsLog


def start_or_resume(trainer, out_dir, *, resume: bool, config: dict, budget_key: str, counter: str,
                    init_params) -> tuple[int, MetricsLog, dict]:
    """``(done, log, meta)``: how many ``counter`` units (iterations, epochs) are done, the metrics so far and
    the checkpoint's metadata (empty for a fresh start).

    A fresh start initialises ``trainer`` from ``init_params``. A resume restores parameters and optimiser state
    from ``out_dir/checkpoint.npz``, keeps the logged records up to the checkpoint, and refuses a checkpoint
    written with other settings (only the budget, ``config[budget_key]``, may change).
    """
    if not resume:
        trainer.init(init_params)
        return 0, MetricsLog(out_dir), {}
    arrays, meta = load_checkpoint(Path(out_dir) / "checkpoint.npz")
    if {**meta["config"], budget_key: config[budget_key]} != config:
        raise SpecError("--resume found a checkpoint trained with other settings: use the same options "
                        f"(checkpoint: {meta['config']}).")
    trainer.load_state_arrays(arrays)
    done, log = meta[counter], MetricsLog.read(out_dir)
    log.records = [r for r in log.records if r[counter] <= done]
    return done, log, meta


class NativeTrainerState:
    """Mixin for trainers whose backend object (``self._impl``) holds parameters and optimiser state."""

    @property
    def params(self):
        """The current canonical flat parameters (a numpy copy)."""
        return self._impl.params()

    def state_arrays(self) -> dict:
        """Parameters and optimiser state as named numpy arrays (for :func:`pyneuralode.train.save_checkpoint`)."""
        return {"params": self.params, **self._impl.optimizer_arrays()}

    def load_state_arrays(self, arrays: dict) -> None:
        """Restore what :meth:`state_arrays` returned (parameters and optimiser state)."""
        self.init(arrays["params"])
        self._impl.load_optimizer_arrays({k: v for k, v in arrays.items() if k != "params"})
