"""Reading a run folder back: `Run` and what a run's config names (its space, its corpus).

Reports, exports and the CLI read runs through this module; none of them imports the
orchestrator (`genesis.runs.api`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genesis.core.records import Record, best_records
from genesis.core.space import SearchSpace, parse_search_space
from genesis.core.summary import summarize
from genesis.errors import GenesisError
from genesis.runs.retrain import read_retrainings
from genesis.runs.store import RunStore
from genesis.train.data import TokenData, load_data


@dataclass
class Run:
    """A run: its folder, configuration and every evaluation so far."""

    store: RunStore
    config: dict[str, Any]
    records: list[Record]
    logbook: list[dict[str, Any]]

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Read a run folder (finished or not) back."""
        store = RunStore.open(path)
        checkpoint = store.checkpoint() or {}
        logbook = checkpoint.get("evolution", {}).get("logbook", [])
        return cls(store, store.config(), store.records(), logbook)

    @property
    def id(self) -> str:
        return self.store.id

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def status(self) -> str:
        """finished, running or interrupted."""
        return self.store.status()

    @property
    def population(self) -> list[Record]:
        """The records of the last generation."""
        last = max((r.generation for r in self.records), default=0)
        return [r for r in self.records if r.generation == last]

    def best(self, k: int = 5) -> list[Record]:
        """The `k` best distinct genomes over the whole run, best first."""
        return best_records(self.records, k)

    def to_dataframe(self):
        """The run's evaluations as a pandas DataFrame: one row per evaluation, with its
        generation, index, genome and training ids, operator, cached flag, compute, the
        traits and the metrics as columns (replicates, curves and failure reasons left out)."""
        import pandas as pd

        rows = []
        for record in self.records:
            metrics = {k: v for k, v in record.outcome.to_dict().items() if k not in ("replicates", "curve")}
            rows.append({"generation": record.generation, "index": record.index, "genome_id": record.genome_id,
                         "training_id": record.genome.training_id, "operator": record.operator,
                         "cached": record.cached, "compute_tokens": record.compute_tokens,
                         **record.genome.to_dict(), **metrics})
        return pd.DataFrame(rows)

    def champions(self, k: int = 3) -> list[Record]:
        """The `k` best distinct models, confirmed champions first in their confirmed
        (test) order, then the best at selection."""
        by_identity = {r.genome.training_id: r for r in reversed(self.records) if not r.cached}
        confirmed = [by_identity[c["training_id"]] for c in self.summary()["confirmed"]]
        rest = [r for r in self.best(k + len(confirmed)) if r not in confirmed]
        return (confirmed + rest)[:k]

    @property
    def retrainings(self):
        """The run's fresh-seed retrainings (`genesis.core.noise.Retraining`): noise probes
        and confirmations."""
        return read_retrainings(self.path)

    def summary(self) -> dict[str, Any]:
        """Totals, compute, noise floor and confirmed champions (`genesis.core.summary.summarize`)."""
        return summarize(self.records, self.retrainings, self.logbook,
                         self.config.get("noise", {}).get("confirm", 0), self.config["data"].get("baselines"))

    def generation_best(self) -> list[float | None]:
        """Best validation loss of each complete generation."""
        return [entry["best"] for entry in self.logbook]


def space_of(config: dict[str, Any]) -> SearchSpace:
    """The search space a run was started with, from its resolved config."""
    described = config["search_space"]
    return parse_search_space({k: v for k, v in described.items() if k != "source"},
                              source=described.get("source") or "run config")


def tokens_of(config: dict[str, Any], data: str | Path | None = None,
              cache_dir: str | Path | None = None) -> TokenData:
    """The tokenized corpus a run was trained on: its own folder (or the hub), or `data`
    if the folder moved.

    Raises:
        GenesisError: the data found is not the data the run used.
    """
    source = config["data"]["source"]
    if data is None and not source.startswith("hub:"):
        data = source
    tokens = load_data(data, config["recipe"]["vocab_size"], cache_dir)
    if tokens.key != config["data"]["key"]:
        raise GenesisError(f"the data differs from the data run {config['run_id']} was trained on "
                           f"({tokens.key} instead of {config['data']['key']})")
    return tokens
