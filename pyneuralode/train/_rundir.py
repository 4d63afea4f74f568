"""The run-directory contract: one implementation for every training run (spiral, cnf, mnist and new problems).

A run directory (the CLI's ``--out``) holds one training run:

- ``checkpoint.npz``: parameters, optimiser state, the loop counter (``iteration`` or ``epoch``), the run's
  config, any extra state the problem needs (the spiral's sampler state) and *the metric records up to that
  point*. It is the single source of truth: resuming needs nothing else.
- ``metrics.json`` / ``metrics.csv``: views of those records plus the run summary, rewritten after each checkpoint.
- the problem's outputs (``params.npy``, a PNG), written when the run finishes; ``.lock`` while a run is live.

:class:`RunDirectory` keeps these promises for every problem that uses it:

1. **One live run per directory.** Entering takes an exclusive lock on ``.lock`` (``fcntl.flock``; the operating
   system releases it when the process ends, even by ``kill -9``). A second run into the same directory stops at
   once with :class:`pyneuralode.RunDirectoryError` naming the holder's pid.
2. **Nothing replaced by accident.** A fresh run refuses a directory that already holds files. ``resume=True``
   continues the run from its checkpoint; ``overwrite=True`` deletes the previous run's checkpoint, metrics and
   outputs (other files stay) and starts again.
3. **Checked before training.** The path must be, or be creatable as, a directory in which a file can be
   written; a file in the way, a read-only directory or a full disk is an error before the first step.
4. **Checkpoint and metrics are one unit.** :meth:`RunDirectory.commit` writes the checkpoint, records included,
   atomically, then the metrics views. A crash or full disk at any moment leaves a checkpoint whose records match
   its parameters, and resuming continues the identical run and rewrites the views. A failed write removes its
   temporary; a killed process's leftovers are deleted by the next run in the directory.
5. **One clear error, the last consistent state kept.** A write that fails (full disk, permissions) stops the run
   with a ``RunDirectoryError`` that names the file, says which checkpoint is intact and how to continue; a
   damaged or incomplete checkpoint (truncated, empty, bit-flipped, missing or wrong-shaped arrays) is refused
   when the run starts. A missing or damaged ``metrics.json`` never blocks resuming.

Use (``trainer`` has ``init``, ``state_arrays`` and ``load_state_arrays``)::

    with RunDirectory(out, config=dataclasses.asdict(cfg), budget_key="iters", counter="iteration",
                      resume=resume, overwrite=overwrite, outputs=("spiral.png",)) as run:
        done, log, meta = run.start(trainer, init_params=model.init(cfg.seed))
        for it in range(done + 1, cfg.iters + 1):
            ...                                   # one step
            log.append(**record)
            if it % cfg.eval_every == 0 or it == cfg.iters:
                run.commit(trainer, log, it, rng=rng.bit_generator.state)
        log.summary.update(...)
        run.write_metrics(log)
        run.save_array("params.npy", trainer.params)
        with run.output("spiral.png") as tmp:     # written to a temporary, renamed on success
            fig.savefig(tmp)
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

import numpy as np

from .._errors import RunDirectoryError, SpecError
from ._atomic import atomic_path, is_temporary
from ._checkpoint import DAMAGED_ADVICE, load_checkpoint, save_checkpoint
from ._metrics import MetricsLog
from ._resume import check_state_arrays

CHECKPOINT = "checkpoint.npz"
LOCK = ".lock"
RUN_FILES = (CHECKPOINT, "metrics.json", "metrics.csv", "params.npy")
"""What every run writes (``overwrite=True`` deletes these and the problem's ``outputs``)."""

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _why(err: OSError) -> str:
    if err.errno in _FULL:
        return "the disk is full"
    if err.errno in _NOT_WRITABLE:
        return "the directory is not writable"
    return err.strerror or type(err).__name__


def _config_differences(saved: dict, now: dict, budget_key: str) -> str:
    """The settings in which the checkpoint's ``saved`` config and this run's ``now`` differ, one per option as
    its command-line flag (``--lr: the checkpoint has 0.02, this run 0.1``); the run length may grow, so it is not
    one of them."""
    missing = object()
    parts = []
    for key in sorted(set(saved) | set(now), key=lambda k: (list(now) + list(saved)).index(k)):
        if key == budget_key or saved.get(key, missing) == now.get(key, missing):
            continue
        old, new = saved.get(key, "(not set)"), now.get(key, "(not set)")
        parts.append(f"--{key.replace('_', '-')}: the checkpoint has {old!r}, this run {new!r}")
    return "; ".join(parts)


def _lock(fd: int) -> None:
    """Take an exclusive lock on ``fd`` without waiting (raises ``OSError`` if another process holds it)."""
    if os.name == "nt":
        import msvcrt
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


class RunDirectory:
    """A training run's output directory, entered as a context manager (see the module docstring).

    **Arguments:**

    - ``path``: the directory (created if missing).
    - ``config``: the run's settings as a JSON-serialisable dict; a resumed run must match it except for
      ``config[budget_key]``, the length of the run (``"iters"``, ``"epochs"``).
    - ``counter``: the name of the loop counter records and checkpoints carry (``"iteration"``, ``"epoch"``).
    - ``resume``: continue from ``path/checkpoint.npz`` (which must exist).
    - ``overwrite``: start again in a directory that holds a run, deleting that run's files first.
    - ``outputs``: the problem's own output files (``("spiral.png",)``), deleted by ``overwrite``.
    """

    def __init__(self, path, *, config: dict, budget_key: str, counter: str, resume: bool = False,
                 overwrite: bool = False, outputs: tuple[str, ...] = ()):
        if resume and overwrite:
            raise SpecError("--resume continues the run in --out and --overwrite deletes it: give one of them.")
        self.path = Path(path)
        self.config, self.budget_key, self.counter = config, budget_key, counter
        self.resume, self.overwrite, self.outputs = resume, overwrite, tuple(outputs)
        self.checkpoint = self.path / CHECKPOINT
        self._fd: int | None = None
        self._created = False
        self._committed: int | None = None  # the counter of the newest intact checkpoint
        self._resume_from: tuple[dict, dict] | None = None

    # -- entering: path checks, lock, contents ------------------------------------------------------------------

    def __enter__(self) -> RunDirectory:
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"--out {self.path} is a file, not a directory: choose another --out.")
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirectoryError(f"Cannot create the run directory {self.path} ({_why(err)}; a file may stand "
                                    "where a parent directory should): choose another --out.") from None
        try:
            self._take_lock()
        except RunDirectoryError:
            if self._created:
                with contextlib.suppress(OSError):
                    self.path.rmdir()
            raise
        try:
            self._check_contents()
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._release(failed=exc_type is not None)

    def _take_lock(self) -> None:
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirectoryError(f"Cannot write to the run directory {self.path} ({_why(err)}): choose another "
                                    "--out, or make it writable.") from None
        try:
            _lock(fd)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() if hasattr(os, "pread") else ""
            os.close(fd)
            raise RunDirectoryError(f"{self.path} is in use by another run ({holder or 'pid unknown'}): wait for it "
                                    "to finish, or choose another --out.") from None
        self._fd = fd
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        try:  # also proves the disk takes a write before any training is spent
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, started {started}\n".encode(), 0)
            os.fsync(fd)
        except OSError as err:
            self._release(failed=True)
            raise RunDirectoryError(f"Cannot write to the run directory {self.path} ({_why(err)}): free space or "
                                    "choose another --out.") from None

    def _check_contents(self) -> None:
        for name in os.listdir(self.path):  # a killed process's temporaries (a live one would hold the lock)
            if is_temporary(name):
                with contextlib.suppress(OSError):
                    (self.path / name).unlink()
        held = sorted(n for n in os.listdir(self.path) if n != LOCK)
        if self.resume:
            self._read_checkpoint()
            return
        if not held:
            return
        if not self.overwrite:
            shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
            what = "a run" if CHECKPOINT in held else "files"
            raise RunDirectoryError(f"{self.path} already holds {what} ({shown}): continue it with --resume, start "
                                    "again with --overwrite (deletes the run's checkpoint, metrics and outputs), or "
                                    "choose another --out.")
        for name in (*RUN_FILES, *self.outputs):
            try:
                (self.path / name).unlink(missing_ok=True)
            except OSError as err:
                raise RunDirectoryError(f"--overwrite could not delete {self.path / name} ({_why(err)}): delete it "
                                        "yourself or choose another --out.") from None

    def _release(self, *, failed: bool) -> None:
        if self._fd is None:
            return
        if failed and self._created and os.listdir(self.path) == [LOCK]:  # leave no trace of a run that never began
            with contextlib.suppress(OSError):
                (self.path / LOCK).unlink()
                self.path.rmdir()
        os.close(self._fd)  # closing releases the lock
        self._fd = None

    # -- the run ----------------------------------------------------------------------------------------------

    def _read_checkpoint(self) -> None:
        """Load and vet the checkpoint to resume from (before any model is built or step trained)."""
        arrays, meta = load_checkpoint(self.checkpoint)
        done = meta.get(self.counter)
        if not isinstance(done, int) or not isinstance(meta.get("config"), dict):
            raise RunDirectoryError(f"Checkpoint {self.checkpoint} lacks its {self.counter} or config metadata: "
                                    f"{DAMAGED_ADVICE}.")
        budget = self.config[self.budget_key]
        if {**meta["config"], self.budget_key: budget} != self.config:
            raise SpecError("--resume found a checkpoint trained with other settings: use the same options "
                            f"({_config_differences(meta['config'], self.config, self.budget_key)}).")
        if done > budget:
            flag = "--" + self.budget_key.replace("_", "-")
            raise SpecError(f"--resume found a checkpoint at {self.counter} {done}, beyond {flag} {budget}: pass "
                            f"{flag} {done} or more.")
        self._resume_from = arrays, meta

    def start(self, trainer, *, init_params) -> tuple[int, MetricsLog, dict]:
        """``(done, log, meta)``: how many ``counter`` units are done, the records so far and the checkpoint's
        metadata (``{}`` for a fresh start). A fresh start initialises ``trainer`` from ``init_params``; a resume
        restores parameters, optimiser state and records from the checkpoint after checking that they fit."""
        trainer.init(init_params)
        if not self.resume:
            return 0, MetricsLog(self.path), {}
        arrays, meta = self._resume_from
        try:
            check_state_arrays(arrays, trainer.state_arrays())
            trainer.load_state_arrays(arrays)
        except (SpecError, KeyError, ValueError, TypeError, RuntimeError) as err:
            raise RunDirectoryError(f"Checkpoint {self.checkpoint} does not fit this run: {err} "
                                    f"{DAMAGED_ADVICE[0].upper()}{DAMAGED_ADVICE[1:]}.") from None
        done = meta[self.counter]
        records = meta.get("records")
        if records is None:
            records = self._records_from_metrics_file()
        self._committed = done
        return done, MetricsLog(self.path, records=[r for r in records if r[self.counter] <= done]), meta

    def _records_from_metrics_file(self) -> list[dict]:
        """Records of a checkpoint written before checkpoints carried them: from ``metrics.json``."""
        try:
            return MetricsLog.read(self.path).records
        except RunDirectoryError as err:
            raise RunDirectoryError(f"{err} The checkpoint {self.checkpoint} comes from an older pyneuralode that "
                                    "kept the records only there: start the run again with --overwrite.") from None

    def commit(self, trainer, log: MetricsLog, done: int, **extra) -> None:
        """Checkpoint the run after ``done`` units: the trainer's state, ``extra`` metadata and ``log``'s records
        in one atomic file, then the metrics views. On failure the previous checkpoint stays and a
        :class:`pyneuralode.RunDirectoryError` says how to continue."""
        meta = {self.counter: done, "config": self.config, **extra, "records": log.records}
        arrays = trainer.state_arrays()
        try:
            save_checkpoint(self.checkpoint, arrays, meta)
        except OSError as err:
            raise self._stopped(self.checkpoint, err) from None
        self._committed = done
        self.write_metrics(log)

    def write_metrics(self, log: MetricsLog) -> None:
        """Write ``metrics.json``/``metrics.csv`` (records and summary) atomically."""
        try:
            log.write()
        except OSError as err:
            raise self._stopped(self.path / f"{log.name}.json", err) from None

    @contextlib.contextmanager
    def output(self, name: str):
        """Yield a temporary path for the output ``name`` (keeps its suffix); renamed into place on success."""
        target = self.path / name
        try:
            with atomic_path(target) as tmp:
                yield tmp
        except OSError as err:
            raise self._stopped(target, err) from None

    def save_array(self, name: str, array) -> None:
        """Write ``array`` to the ``.npy`` output ``name`` atomically."""
        with self.output(name) as tmp:
            np.save(tmp, np.asarray(array))

    def _stopped(self, path: Path, err: OSError) -> RunDirectoryError:
        if self._committed is None:
            kept = "no checkpoint was written yet: start it again"
        else:
            kept = (f"its checkpoint at {self.counter} {self._committed} is intact and holds every record up to it: "
                    "continue with --resume")
        return RunDirectoryError(f"Could not write {path} ({_why(err)}), so the run stopped; {kept} once the "
                                 "directory can be written again (free space, fix permissions).")
