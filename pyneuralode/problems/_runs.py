"""What the problems' training runs share around :class:`pyneuralode.train.RunDirectory`: a start that also
restores the batch generators, the median step time, and the aligned summary table."""

from __future__ import annotations

import numpy as np


def rng_state(rng):
    """The bit-generator state of ``rng`` (a ``numpy.random.Generator``, or a dict of them: a dict of states), as
    a checkpoint's ``rng`` metadata holds it."""
    if isinstance(rng, dict):
        return {key: generator.bit_generator.state for key, generator in rng.items()}
    return rng.bit_generator.state


def start_run(run, trainer, *, init_params, rng):
    """``(done, log)`` of ``run.start(trainer, init_params=init_params)``; a resumed run also puts ``rng`` (a
    generator or a dict of them) back in the state its checkpoint saved as ``rng=rng_state(rng)``."""
    done, log, meta = run.start(trainer, init_params=init_params)
    if meta:
        if isinstance(rng, dict):
            for key, generator in rng.items():
                generator.bit_generator.state = meta["rng"][key]
        else:
            rng.bit_generator.state = meta["rng"]
    return done, log


def median_step_ms(log) -> float:
    """The median of ``log``'s ``step_seconds`` column in milliseconds, leaving out the first step (which
    compiles) when there are others."""
    steps = log.column("step_seconds")
    return 1e3 * float(np.median(steps[1:] or steps))


def format_rows(rows) -> str:
    """``(label, value)`` pairs as lines of an aligned table: each label padded to the longest, two spaces, the
    value."""
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
