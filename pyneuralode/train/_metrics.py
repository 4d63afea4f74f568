"""Metrics of a training run, kept as a list of records and written as JSON (and CSV) after every update."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path


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
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"summary": self.summary, "records": self.records}, indent=2, default=float))
        os.replace(tmp, path)
        if self.records:
            keys = list(dict.fromkeys(k for r in self.records for k in r))
            tmp_csv = self.out_dir / f"{self.name}.csv.tmp"
            with open(tmp_csv, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(self.records)
            os.replace(tmp_csv, self.out_dir / f"{self.name}.csv")
        return path

    @classmethod
    def read(cls, out_dir, name: str = "metrics") -> MetricsLog:
        """Reload a log written by :meth:`write` (for ``--resume``)."""
        data = json.loads((Path(out_dir) / f"{name}.json").read_text())
        return cls(out_dir, name, summary=data["summary"], records=data["records"])
