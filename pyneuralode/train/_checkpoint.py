"""Checkpoints: numpy arrays plus JSON metadata in one ``.npz``, written atomically (see ``_atomic``).

An interrupted write never leaves a half-written checkpoint: the previous one stays until ``os.replace`` swaps
the new one in (atomic on POSIX and Windows). Reading one that is missing, truncated, bit-flipped or incomplete
raises :class:`pyneuralode.RunDirectoryError` naming the file and what to do; pickled objects are never loaded.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .._errors import RunDirectoryError
from ._atomic import atomic_write

META_KEY = "__meta__"

DAMAGED_ADVICE = ("the run cannot continue from it: restore the file from a backup, or start the run again with "
                  "--overwrite")


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` and JSON-serialisable ``meta`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_bytes = np.frombuffer(json.dumps(meta, default=float).encode(), dtype=np.uint8)
    payload = {META_KEY: meta_bytes, **{k: np.asarray(v) for k, v in arrays.items()}}
    return atomic_write(path, lambda fh: np.savez(fh, **payload))


def _read_meta(stored: np.ndarray) -> dict:
    text = str(stored) if stored.dtype.kind == "U" else stored.tobytes().decode()  # "U": older checkpoints
    meta = json.loads(text)
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a JSON object")
    return meta


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` from a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise RunDirectoryError(f"No checkpoint at {path}: start without --resume, or point --out at the earlier "
                                "run.")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            names = set(data.files)
            if META_KEY not in names:
                raise RunDirectoryError(f"Checkpoint {path} has no metadata ({META_KEY}), so it was not written by "
                                        f"pyneuralode or was cut short: {DAMAGED_ADVICE}.")
            meta = _read_meta(data[META_KEY])
            arrays = {k: data[k] for k in sorted(names - {META_KEY})}  # reading each array checks its CRC-32
    except RunDirectoryError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise RunDirectoryError(f"Checkpoint {path} is damaged ({err}): {DAMAGED_ADVICE}.") from None
    except (OSError, EOFError, ValueError, KeyError, UnicodeDecodeError, TypeError, AttributeError):
        # numpy's own words would suggest loading with allow_pickle=True: a checkpoint never needs that.
        raise RunDirectoryError(f"Checkpoint {path} is damaged (truncated, empty, or not a pyneuralode "
                                f"checkpoint): {DAMAGED_ADVICE}.") from None
    return arrays, meta
