"""The table backend: evaluations answered by lookup in a sweep table, in microseconds.

    genesis evolve --backend table:benchmarks/results/table-quick --strategy tpe

With a ground-truth table (`genesis sweep`) any search strategy replays in seconds, so
it can be run hundreds of times and scored against the true best architecture, as
tabular NAS benchmarks (NAS-Bench-101/201) do for vision. Everything but the training
is unchanged: records, compute accounting, reports and resume.

How a job is answered:

- The genome's architecture (`Genome.training_id`) selects its rows; a table without
  it fails the run at start (`check_covers`).
- The replicate picks one of the table's seeds, deterministically: seed
  `(base + replicate) mod K`, where `base` comes from the run seed and the
  architecture, so a run's replicates and fresh-seed retrainings visit the table's
  seeds in turn (with K seeds, a model has at most K distinct outcomes).
- Compute is counted as if it had trained: the steps it would have run; its wall time
  is the sweep's measured one (pro rata for a part of the budget).
- Early stopping reads the row's learning curve and stops where a trained run would
  have; the outcome's loss is then the curve's last point (training loss over that
  part of the budget: the table has no validation loss mid-training).
- A lower rung of successive halving (fewer steps) is answered with the full
  training's curve at that fraction; a real shorter training would also have decayed
  its learning rate sooner, so lower rungs are approximate.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from genesis.core.recipe import parse_recipe
from genesis.core.records import CURVE_POINTS, STATUSES, Outcome, training_seed
from genesis.core.space import SearchSpace
from genesis.errors import GenesisError
from genesis.runs.backends.base import TABLE_PREFIX
from genesis.runs.sweep import TABLE_FILE, architectures, read_meta


class Table:
    """A sweep table in memory: rows by architecture and seed index.

    Raises:
        GenesisError: not a sweep folder, or a corrupt table.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        path = self.folder / TABLE_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise GenesisError(f"{self.folder} has no {TABLE_FILE}") from None
        self.rows: dict[str, dict[int, dict[str, Any]]] = {}
        reader = csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1]))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise GenesisError(f"{path} lacks the column {missing[0]!r}")
        for number, row in enumerate(reader, start=2):
            try:
                self.rows.setdefault(row["training_id"], {})[int(row["seed"])] = _checked(row)
            except (KeyError, TypeError, ValueError) as error:
                raise GenesisError(f"{path}: line {number} is corrupt ({error})".splitlines()[0]) from None

    @property
    def recipe(self) -> dict[str, Any]:
        return self.meta["recipe"]

    def seeds_of(self, training_id: str) -> list[int]:
        """The seed indices the table holds for an architecture."""
        return sorted(self.rows.get(training_id, {}))

    def check_covers(self, space: SearchSpace) -> None:
        """Raise `GenesisError` unless every architecture of `space` has a row."""
        missing = [g for g in architectures(space) if g.training_id not in self.rows]
        if missing:
            raise GenesisError(f"the table {self.folder} lacks {len(missing)} architectures of the "
                               f"search space (e.g. {missing[0].describe()}); sweep them first")

    def outcome(self, training_id: str, seed_index: int, steps: int | None = None,
                give_up_above: Sequence[float | None] = (), measure_test: bool = False) -> Outcome:
        """The outcome of one architecture at one of the table's seeds, at `steps`
        (default the recipe's), given up where `give_up_above` says (see `genesis.train.trainer`);
        its test loss only when asked, as a training would measure it."""
        row = self.rows[training_id][seed_index]
        recipe = self.recipe
        full_steps = recipe["steps"]
        tokens_per_step = recipe["batch_size"] * recipe["seq_len"]
        if row["status"] != "ok":
            return Outcome(status=row["status"], reason="failed in the sweep",
                           tokens=full_steps * tokens_per_step)
        curve = [float(v) for v in row["curve"].split()]
        ends = [round(full_steps * (k + 1) / CURVE_POINTS) for k in range(CURVE_POINTS)]
        stop_point = None
        lowest = math.inf
        for k, bound in enumerate(give_up_above):
            if k >= len(curve) - 1:
                break
            lowest = min(lowest, curve[k])
            if bound is not None and lowest > bound:
                stop_point = k
                break
        if steps is not None and steps < full_steps:
            if not curve:
                return Outcome(status="error", reason="the table has no learning curves to answer a lower rung",
                               tokens=0)
            point = max(0, min(CURVE_POINTS - 1, math.ceil(steps / full_steps * CURVE_POINTS) - 1))
            return self._partial(row, curve[: point + 1], steps * tokens_per_step, None)
        if stop_point is not None:
            return self._partial(row, curve[: stop_point + 1], ends[stop_point] * tokens_per_step,
                                 ends[stop_point])
        val_loss = float(row["val_loss"])
        return Outcome(
            status="ok", val_loss=val_loss, val_ppl=math.exp(val_loss),
            train_loss=_number(row["train_loss"]), params=int(float(row["params"])),
            non_embedding_params=int(float(row["non_embedding_params"])),
            init_grad_norm=_number(row["init_grad_norm"]), tokens=full_steps * tokens_per_step,
            latency_ms=_number(row["latency_ms"]), size_bytes=int(float(row["size_bytes"])),
            wall_s=_number(row["wall_s"]) or 0.0,
            curve=curve, test_loss=_number(row["test_loss"]) if measure_test else None)

    @staticmethod
    def _partial(row: dict[str, Any], curve: list[float], tokens: int, stopped_at: int | None) -> Outcome:
        # the wall time of the part it ran: the sweep's training time, pro rata
        share = len(curve) / CURVE_POINTS
        return Outcome(status="ok", val_loss=curve[-1], val_ppl=math.exp(curve[-1]), train_loss=curve[-1],
                       wall_s=(_number(row["wall_s"]) or 0.0) * share,
                       params=int(float(row["params"])),
                       non_embedding_params=int(float(row["non_embedding_params"])),
                       init_grad_norm=_number(row["init_grad_norm"]), tokens=tokens,
                       latency_ms=_number(row["latency_ms"]), size_bytes=int(float(row["size_bytes"])),
                       curve=curve if stopped_at is not None else [], stopped_at=stopped_at)


COLUMNS = ("training_id", "seed", "status", "val_loss", "test_loss", "train_loss", "params",
           "non_embedding_params", "init_grad_norm", "latency_ms", "size_bytes", "wall_s", "curve")
_REQUIRED_IF_OK = ("val_loss", "params", "non_embedding_params", "size_bytes")


def _checked(row: dict[str, Any]) -> dict[str, Any]:
    """A table row whose numbers are all finite (a table may come from someone else, and
    one NaN or -1e308 loss would win every selection): raises ValueError otherwise."""
    if row["status"] not in STATUSES:
        raise ValueError(f"unknown status {row['status']!r}")
    if row["status"] != "ok":
        return row
    for column in COLUMNS[3:-1]:
        value = _number(row[column])
        if value is None:
            if column in _REQUIRED_IF_OK:
                raise ValueError(f"{column} is empty")
        elif not math.isfinite(value) or value < 0 or (column.endswith("loss") and value > 1e3):
            raise ValueError(f"{column} is {row[column]!r}")
    if not all(math.isfinite(v) and 0 <= v <= 1e3 for v in map(float, row["curve"].split())):
        raise ValueError("the curve holds a number out of range")
    return row


def _number(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


class TableBackend:
    """An evaluator backend that looks trainings up in a `Table` (see the module docs)."""

    def __init__(self, table: Table, run_seed: int):
        self.table, self.run_seed = table, run_seed

    def run(self, jobs: Sequence) -> Iterator[tuple[Any, Outcome]]:
        for job in jobs:
            training_id = job.genome.training_id
            seeds = self.table.seeds_of(training_id)
            if not seeds:
                yield job, Outcome(status="error", reason="architecture not in the table")
                continue
            if job.replicate >= len(seeds):  # (base + replicate) mod K would repeat a seed already drawn
                yield job, Outcome(status="error", reason=f"the table holds {len(seeds)} seeds of this "
                                                          "architecture: no fresh one is left")
                continue
            base = training_seed(self.run_seed, training_id) % len(seeds)
            index = seeds[(base + job.replicate) % len(seeds)]
            yield job, self.table.outcome(training_id, index, job.steps, job.give_up_above,
                                          job.measure_test)

    def close(self) -> None:
        """Nothing to release."""


def _settings(recipe) -> dict[str, Any]:
    """What a recipe trains with: everything but its name (`quick-adamw` is the `quick` the
    published tables were trained with)."""
    return {k: v for k, v in recipe.to_dict().items() if k != "name"}


def open_table_backend(backend: str, space: SearchSpace, recipe, replicates: int = 1,
                       fresh_seeds: int = 0) -> Table | None:
    """The table of a `table:PATH` backend name, checked against the run's search space
    and recipe, and holding enough seeds: `replicates` of every architecture for
    selection, and `fresh_seeds` more, distinct ones, of the architectures with the most
    seeds (a sweep's `top`); a model retrained beyond its architecture's seeds gets a
    failed retraining that says so. None for any other backend.

    Raises:
        GenesisError: not a table, a table of another recipe, one that lacks some
            architecture of the space, or one with too few seeds.
    """
    if not backend.startswith(TABLE_PREFIX):
        return None
    table = Table(backend[len(TABLE_PREFIX):])
    if _settings(parse_recipe(table.recipe, f"{table.folder} recipe")) != _settings(recipe):
        raise GenesisError(f"the table {table.folder} was trained with recipe "
                           f"{table.recipe.get('name')!r}, not this run's {recipe.name!r}; pass --recipe "
                           f"{table.recipe.get('name')}")
    table.check_covers(space)
    counts = [len(table.seeds_of(g.training_id)) for g in architectures(space)]
    if replicates > min(counts) or replicates + fresh_seeds > max(counts):
        raise GenesisError(f"the table {table.folder} holds {min(counts)} seeds per architecture (its best "
                           f"{max(counts)}): {replicates} for selection leave {max(0, max(counts) - replicates)} "
                           f"fresh ones at most, and this run asks for {fresh_seeds} (lower --confirm-seeds and "
                           "--noise-probes, or sweep more seeds: genesis sweep --top --top-seeds)")
    return table
