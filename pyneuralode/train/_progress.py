"""A progress bar for long work: tqdm when installed and useful, plain periodic lines otherwise."""

from __future__ import annotations

import importlib.util
import sys


class _PlainBar:
    """Prints ``desc i/total key=value`` every ``every`` updates and at the end (for logs, CI, and machines
    without tqdm); ``every=0`` prints nothing."""

    def __init__(self, total, desc, every):
        self.total, self.desc, self.every, self.n, self.postfix = total, desc, every, 0, ""

    def update(self, n=1):
        self.n += n
        if self.every and (self.n % self.every == 0 or self.n == self.total):
            print(f"{self.desc} {self.n}/{self.total} {self.postfix}", file=sys.stderr, flush=True)

    def set_postfix(self, **values):
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(total: int, desc: str, *, initial: int = 0, enabled: bool = True):
    """A bar with ``update()``, ``set_postfix(**kv)`` and ``close()``; tqdm on a terminal, plain lines elsewhere."""
    if enabled and importlib.util.find_spec("tqdm") is not None and sys.stderr.isatty():
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, initial=initial, dynamic_ncols=True)
    bar = _PlainBar(total, desc, every=max(1, total // 20) if enabled else 0)
    bar.n = initial
    return bar
