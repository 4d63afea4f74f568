"""Metrics of a training run, kept as a list of records and written as JSON (and CSV) after every update."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from .._errors import RunDirectoryError
from ._atomic import atomic_write


def json_ready(value):
    """``value`` with what strict JSON cannot hold made plain: a NaN or infinite number becomes ``null`` (json's
    bare ``NaN`` is not JSON: jq and JavaScript refuse it), NumPy scalars and arrays become Python numbers and
    lists (an ``np.int64`` stays an integer instead of turning into ``3.0``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return json_ready(value.item())
    return value


def _dumps(value, **kwargs) -> str:
    return json.dumps(json_ready(value), allow_nan=False, default=lambda v: json_ready(float(v)), **kwargs)


class MetricsLog:
    """Append-only metric records (one dict per logged step or epoch) with atomic JSON/CSV output.

    ``summary`` holds run-level facts (config, final figures) and goes into the JSON beside the records.
    """

    def __init__(self, out_dir, name: str = "metrics", *, summary: dict | None = None,
                 records: list[dict] | None = None):
        self.out_dir = Path(out_dir)
        self.name = name
        self.summary = dict(summary or {})
        self.records = list(records or [])

    def append(self, **record) -> None:
        """Add one record (keyword arguments: JSON-serialisable values); :meth:`write` saves the log."""
        self.records.append(record)

    def column(self, key: str) -> list:
        """Every logged value of ``key`` (records without it are skipped)."""
        return [r[key] for r in self.records if key in r]

    def write(self) -> Path:
        """Write ``<name>.json`` (summary + records) and ``<name>.csv`` atomically; returns the JSON path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.name}.json"
        # One record per line, each by json's C encoder (indent= would switch to the pure-Python one: 10x slower).
        records = ",\n".join("  " + _dumps(r) for r in self.records)
        summary = _dumps(self.summary, indent=2)
        text = f'{{"summary": {summary},\n "records": [\n{records}\n ]}}\n'
        # Not fsync'd: these are views of the records the checkpoint holds, rewritten from it on resume.
        atomic_write(path, lambda fh: fh.write(text.encode()), durable=False)
        if self.records:
            table = io.StringIO(newline="")
            writer = csv.DictWriter(table, fieldnames=list(dict.fromkeys(k for r in self.records for k in r)))
            writer.writeheader()
            writer.writerows(self.records)
            atomic_write(self.out_dir / f"{self.name}.csv", lambda fh: fh.write(table.getvalue().encode()),
                         durable=False)
        return path

    @classmethod
    def read(cls, out_dir, name: str = "metrics") -> MetricsLog:
        """Reload a log written by :meth:`write`; a missing or damaged file is a
        :class:`pyneuralode.RunDirectoryError` naming it."""
        path = Path(out_dir) / f"{name}.json"
        try:
            data = json.loads(path.read_text())
            return cls(out_dir, name, summary=dict(data["summary"]), records=list(data["records"]))
        except FileNotFoundError:
            raise RunDirectoryError(f"No metrics at {path}.") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RunDirectoryError(f"Metrics file {path} is damaged ({type(err).__name__}).") from None
