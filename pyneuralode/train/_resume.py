"""The state API every trainer offers a run directory: parameters and optimiser state as named numpy arrays."""

from __future__ import annotations

import numpy as np

from .._errors import SpecError, trainer_not_initialised
from .._options import CheckedOptions


def check_state_arrays(arrays: dict, fresh: dict) -> None:
    """Refuse (:class:`pyneuralode.SpecError`) state ``arrays`` that lack an array a freshly initialised trainer
    has (``fresh``, its ``state_arrays()``) or hold one of another shape or kind."""
    missing = [name for name in fresh if name not in arrays]
    if missing:
        raise SpecError(f"The state lacks {', '.join(missing)} (parameters or optimiser state).")
    for name, want in fresh.items():
        got = np.asarray(arrays[name])
        if got.shape != want.shape or got.dtype.kind != want.dtype.kind:
            what = "parameters" if name == "params" else "optimiser state"
            raise SpecError(f"{name!r} is {got.dtype}{list(got.shape)} but this trainer's {what} needs "
                            f"{want.dtype}{list(want.shape)}.")


class NativeTrainerState(metaclass=CheckedOptions):
    """Mixin for trainers whose backend object (``self._impl``) holds parameters and optimiser state.

    ``init`` must run first: :meth:`_started` marks it, :meth:`_require_started` refuses anything earlier with
    one message on every backend."""

    _is_started = False

    def _started(self) -> None:
        self._is_started = True

    def _require_started(self) -> None:
        if not self._is_started:
            raise trainer_not_initialised()

    @property
    def params(self):
        """The current canonical flat parameters (a numpy copy)."""
        self._require_started()
        return self._impl.params()

    def state_arrays(self) -> dict:
        """Parameters and optimiser state as named numpy arrays (for :func:`pyneuralode.train.save_checkpoint`)."""
        return {"params": self.params, **self._impl.optimizer_arrays()}

    def load_state_arrays(self, arrays: dict) -> None:
        """Restore what :meth:`state_arrays` returned (parameters and optimiser state).

        Arrays that are missing or of another shape than this trainer's are refused with a
        :class:`pyneuralode.SpecError`: bad parameters before anything changes; a bad optimiser entry after the
        parameters were loaded, leaving the trainer as :meth:`init` with them would. So is, on JAX, an optimiser
        state with more arrays than this trainer's (another optimiser's whose first arrays happen to fit; torch's
        own state loading refuses a mismatch)."""
        if "params" not in arrays:
            raise SpecError("The state lacks params (parameters or optimiser state).")
        self.init(arrays["params"])
        check_state_arrays(arrays, self.state_arrays())
        self._impl.load_optimizer_arrays({k: v for k, v in arrays.items() if k != "params"})
