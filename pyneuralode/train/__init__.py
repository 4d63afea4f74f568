"""Training infrastructure shared by every problem: checkpoints, metrics, progress bars."""

from ._checkpoint import load_checkpoint, save_checkpoint
from ._trainer import StepInfo, Trainer
from ._metrics import MetricsLog
from ._progress import progress

__all__ = ["MetricsLog", "StepInfo", "Trainer", "load_checkpoint", "progress", "save_checkpoint"]
