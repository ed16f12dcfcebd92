"""The run folder: everything a run writes, and reading it back.

Layout of `runs/<run-id>/`:

    config.json         the resolved configuration (search space, recipe, data, seed, ...)
    evaluations.jsonl   one `Record` per line, appended as evaluations finish
    summary.json        best genomes and per-generation statistics, written at the end
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from genesis.errors import GenesisError
from genesis.records import Record

CONFIG_FILE = "config.json"
RECORDS_FILE = "evaluations.jsonl"
SUMMARY_FILE = "summary.json"
FORMAT_VERSION = 1


def new_run_id(seed: int) -> str:
    """A sortable, readable id: UTC start time and seed, e.g. `20261123-101500-s0`."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-s{seed}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path` and rename it into place.

    A reader (or a crash) never sees a half-written file.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class RunStore:
    """Reads and writes one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, output: str | Path, run_id: str, config: dict[str, Any]) -> RunStore:
        """Make a new run folder under `output` and write its resolved config.

        Raises:
            GenesisError: `output` cannot be created or written.
        """
        output = Path(output)
        try:
            output.mkdir(parents=True, exist_ok=True)
            path, suffix = output / run_id, 1
            while True:
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    suffix += 1
                    path = output / f"{run_id}-{suffix}"
        except OSError as error:
            raise GenesisError(f"cannot create a run folder in {output}: {error.strerror}") from None
        store = cls(path)
        write_json_atomic(path / CONFIG_FILE, {**config, "run_id": store.id,
                                               "format_version": FORMAT_VERSION})
        return store

    def config(self) -> dict[str, Any]:
        """The resolved configuration the run was started with."""
        path = self.path / CONFIG_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise GenesisError(f"{self.path} is not a genesis run (no {CONFIG_FILE})") from None
        except json.JSONDecodeError as error:
            raise GenesisError(f"{path} is corrupt: {error}") from None

    def append(self, record: Record) -> None:
        """Append one evaluation record and flush it to disk."""
        with (self.path / RECORDS_FILE).open("a") as out:
            out.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def records(self) -> list[Record]:
        """All evaluation records, in the order they were written.

        A last line cut short by a crash is ignored; it is the evaluation in progress.
        """
        path = self.path / RECORDS_FILE
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(Record.from_dict(json.loads(line)))
            except json.JSONDecodeError:
                break
        return records

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / SUMMARY_FILE, summary)

    def summary(self) -> dict[str, Any] | None:
        """The end-of-run summary, or None while the run has not finished."""
        path = self.path / SUMMARY_FILE
        return json.loads(path.read_text()) if path.exists() else None


def best_records(records: Iterable[Record], k: int) -> list[Record]:
    """The `k` best distinct genomes among `records` (first record of each genome)."""
    first: dict[str, Record] = {}
    for record in records:
        first.setdefault(record.genome_id, record)
    ranked = sorted(first.values(), key=lambda r: (r.outcome.fitness, r.generation, r.index))
    return ranked[:k]
