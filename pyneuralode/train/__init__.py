"""Training infrastructure shared by every problem: the run directory (lock, checks, checkpoint and metrics as one
unit), checkpoints, metrics, progress bars."""

from ._checkpoint import load_checkpoint, save_checkpoint
from ._trainer import StepInfo, Trainer
from ._metrics import MetricsLog
from ._progress import progress
from ._rundir import RunDirectory

__all__ = ["MetricsLog", "RunDirectory", "StepInfo", "Trainer", "load_checkpoint", "progress", "save_checkpoint"]
