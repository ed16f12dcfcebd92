"""The run folder: everything a run writes, and reading it back.

Layout of `runs/<run-id>/`:

    config.json         the resolved configuration (search space, recipe, data, seed, ...)
    evaluations.jsonl   one `Record` per line, appended as evaluations finish
    study.db            the Optuna study: one trial per evaluation (see `genesis.runs.study`)
    checkpoint.json     the evolution state after the last complete generation
    run.lock            present while a process works on the run (its pid and host)
    weights/            trained weights (safetensors) of the best genomes so far
    summary.json        best genomes and per-generation statistics, written at the end

Every file but the append-only record log is written atomically (temporary file and
rename), so a run killed at any moment leaves only whole files behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from genesis.core.files import replace_text
from genesis.core.records import Record
from genesis.errors import GenesisError

CONFIG_FILE = "config.json"
RECORDS_FILE = "evaluations.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.json"
LOCK_FILE = "run.lock"
WEIGHTS_DIR = "weights"
STAGING_DIR = ".staged"
FORMAT_VERSION = 1


def new_run_id(seed: int) -> str:
    """A sortable, readable id: UTC start time and seed, e.g. `20261123-101500-s0`."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-s{seed}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader (or a crash) never sees a half-written file
    (`genesis.core.files.replace_text`)."""
    replace_text(path, json.dumps(data, indent=2, sort_keys=True))


def read_json(path: Path, missing: str) -> Any:
    """The JSON in `path`; `GenesisError(missing)` when there is no such file, and one
    naming the file when it is corrupt."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GenesisError(missing) from None
    except json.JSONDecodeError as error:
        raise GenesisError(f"{path} is corrupt: {error}") from None


def drop_torn_line(path: Path) -> None:
    """Cut a last line left half-written by a crash from an append-only log, so the next
    append starts on a fresh line."""
    if path.exists():
        text = path.read_text()
        if text and not text.endswith("\n"):
            with path.open("r+") as out:
                out.truncate(len(text[: text.rfind("\n") + 1].encode()))


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
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json_atomic(path / CONFIG_FILE, {**config, "run_id": store.id, "started": started,
                                               "format_version": FORMAT_VERSION})
        return store

    @classmethod
    def open(cls, path: str | Path) -> RunStore:
        """Open an existing run folder, checking that it is a genesis run of this format.

        Raises:
            GenesisError: not a folder, not a genesis run, or another format version.
        """
        store = cls(path)
        if not store.path.is_dir():
            raise GenesisError(f"{store.path} is not a folder")
        version = store.config().get("format_version")
        if version != FORMAT_VERSION:
            raise GenesisError(f"{store.path} is a run of format version {version}; "
                               f"this genesis reads version {FORMAT_VERSION}")
        return store

    def discard(self) -> None:
        """Remove a run folder whose set-up failed, so no partial run is left behind."""
        shutil.rmtree(self.path, ignore_errors=True)

    def config(self) -> dict[str, Any]:
        """The resolved configuration the run was started with."""
        config = read_json(self.path / CONFIG_FILE, f"{self.path} is not a genesis run (no {CONFIG_FILE})")
        if not isinstance(config, dict) or "run_id" not in config:
            raise GenesisError(f"{self.path} is not a genesis run ({CONFIG_FILE} has no run_id)")
        return config

    def append(self, record: Record) -> None:
        """Append one evaluation record and flush it to disk."""
        with (self.path / RECORDS_FILE).open("a") as out:
            out.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def records(self) -> list[Record]:
        """All evaluation records, by generation and index (the log holds them in the
        order trainings finished).

        A last line cut short by a crash is ignored; it is the evaluation in progress.

        Raises:
            GenesisError: a line before the last is corrupt (the log was damaged, not
                cut by a crash); the message names it.
        """
        path = self.path / RECORDS_FILE
        if not path.exists():
            return []
        # what follows the last newline is a write a crash cut short, even when it parses:
        # a resume would append onto it otherwise
        lines = path.read_text().split("\n")[:-1]
        records = []
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            try:
                records.append(Record.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, GenesisError) as error:
                raise GenesisError(f"{path}: line {number} is corrupt ({type(error).__name__}: {error}); "
                                   "only a last line cut short by a crash is dropped".splitlines()[0]) from None
        return sorted(records, key=lambda r: (r.generation, r.index))

    def drop_partial_record(self) -> list[Record]:
        """Cut a half-written last line left by a crash, so appends start on a fresh line.

        Returns the records that remain.
        """
        records = self.records()
        path = self.path / RECORDS_FILE
        if path.exists() and len(path.read_text().splitlines()) != len(records):
            replace_text(path, "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in records))
        return records

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.path / CHECKPOINT_FILE, state)

    def checkpoint(self) -> dict[str, Any] | None:
        """The state after the last complete generation, or None before the first."""
        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise GenesisError(f"{path} is corrupt: {error}") from None

    def lock(self, force: bool = False) -> None:
        """Take the run for this process: an exclusive create of `run.lock`, which holds
        the pid and host for display.

        A lock left by a dead process of this host is replaced; one held by a live
        process, or by any process of another host (whose liveness cannot be seen from
        here), is replaced only with `force`.

        Raises:
            GenesisError: another process holds the run.
        """
        from filelock import FileLock

        path = self.path / LOCK_FILE
        # the guard serializes stale-lock checks, so two processes cannot both replace one
        with FileLock(str(self.path / f".{LOCK_FILE}.guard")):
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._lock_holder()
                stale = holder is None or (holder.get("host") == socket.gethostname() and not _alive(holder))
                if not (stale or force):
                    raise GenesisError(f"{self.path} is already running (pid {holder['pid']} on "
                                       f"{holder['host']}); if that process is gone, resume with --force")
                path.unlink()
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(handle, "w") as out:
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, out)
                out.flush()
                os.fsync(out.fileno())

    def unlock(self) -> None:
        (self.path / LOCK_FILE).unlink(missing_ok=True)

    def status(self) -> str:
        """finished, running (a live process holds it) or interrupted."""
        if (self.path / SUMMARY_FILE).exists():
            return "finished"
        holder = self._lock_holder()
        return "running" if holder is not None and _alive(holder) else "interrupted"

    def _lock_holder(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / LOCK_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def weights_path(self, genome_id: str) -> Path:
        """Where the trained weights of a genome are kept (if they are)."""
        return self.path / WEIGHTS_DIR / f"{genome_id}.safetensors"

    def staged_weights_path(self, training_id: str) -> Path:
        """Where a training writes its weights before its result is settled: a staging
        folder that pruning never touches, so a result read late still finds its file."""
        return self.path / WEIGHTS_DIR / STAGING_DIR / f"{training_id}.safetensors"

    def settle_weights(self, training_id: str, keep: set[str]) -> None:
        """Move a settled training's staged weights into place, then delete the kept
        weights of every model not in `keep` (the staged file too, if it is not)."""
        staged = self.staged_weights_path(training_id)
        if staged.exists():
            os.replace(staged, self.weights_path(training_id))
        for path in (self.path / WEIGHTS_DIR).glob("*.safetensors"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / SUMMARY_FILE, summary)

    def summary(self) -> dict[str, Any] | None:
        """The end-of-run summary, or None while the run has not finished."""
        path = self.path / SUMMARY_FILE
        return json.loads(path.read_text()) if path.exists() else None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the lock holder still runs; a holder on another host is assumed alive."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_runs(folder: str | Path) -> list[RunStore]:
    """The genesis runs directly inside `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GenesisError(f"{folder} is not a folder")
    return [RunStore(p) for p in sorted(folder.iterdir()) if (p / CONFIG_FILE).is_file()]
