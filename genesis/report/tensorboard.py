"""A run's progress as TensorBoard event files, which TensorBoard shows and W&B, MLflow
and others import (`wandb sync --sync-tensorboard`, `mlflow.tensorboard`).

`TensorBoardLogger` is an observer (`genesis.search.loop.Observer`): pass it to
`genesis.evolve` or use `genesis evolve --log-dir`. It writes under `<log_dir>/<run id>/`:

- per genome, at its evaluation's index in the run: `genome/val_loss`, `genome/val_ppl`,
  `genome/params` and, for every point of its learning curve, `curve/<genome id>`;
- per generation: `generation/best`, `generation/mean`, `generation/median`,
  `generation/failed`, `generation/unique` and `generation/diversity` (the mean Gower
  distance between its genomes, as the report's diversity table);
- per fresh-seed retraining: `retraining/<kind>_val_loss` and `retraining/<kind>_test_loss`.

A resumed run writes on into the same folder (TensorBoard shows a replayed point twice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from genesis.core.records import CURVE_POINTS, Record
from genesis.core.space import SearchSpace
from genesis.errors import GenesisError
from genesis.report.build import diversity
from genesis.search.loop import Observer


class TensorBoardLogger(Observer):
    """Writes a run's genomes, generations and retrainings as TensorBoard scalars.

    Args:
        log_dir: the folder for event files; each run gets a subfolder named by its id.
        space: the run's search space (for the diversity of each generation).
        steps: the recipe's steps, to place learning-curve points at their training step.
    """

    def __init__(self, log_dir: str | Path, space: SearchSpace, steps: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GenesisError("--log-dir needs tensorboard: pip install 'genesis[tensorboard]'") from None
        self._writer_class = SummaryWriter
        self.log_dir, self.space, self.steps = Path(log_dir), space, steps
        self.writer = None
        self.evaluations = 0

    def on_run_start(self, run_id: str, path: Path) -> None:
        self.writer = self._writer_class(log_dir=str(self.log_dir / run_id))

    def on_evaluation(self, record: Record) -> None:
        outcome, step = record.outcome, self.evaluations
        self.evaluations += 1
        if outcome.status != "ok" or outcome.val_loss is None:
            return
        self.writer.add_scalar("genome/val_loss", outcome.val_loss, step)
        self.writer.add_scalar("genome/val_ppl", outcome.val_ppl, step)
        if outcome.params:
            self.writer.add_scalar("genome/params", outcome.params, step)
        if not record.cached:
            for point, loss in enumerate(outcome.curve):
                self.writer.add_scalar(f"curve/{record.genome_id}", loss,
                                       round((point + 1) * self.steps / CURVE_POINTS))

    def on_generation_end(self, generation: int, records: Sequence[Record], stats: dict) -> None:
        for name in ("best", "mean", "median", "failed", "unique"):
            if stats.get(name) is not None:
                self.writer.add_scalar(f"generation/{name}", stats[name], generation)
        [row] = diversity(list(records), self.space) or [{"mean_pairwise_distance": 0.0}]
        self.writer.add_scalar("generation/diversity", row["mean_pairwise_distance"], generation)
        self.writer.flush()

    def on_retraining(self, retraining) -> None:
        outcome = retraining.outcome
        for split in ("val_loss", "test_loss"):
            value = getattr(outcome, split)
            if value is not None:
                self.writer.add_scalar(f"retraining/{retraining.kind}_{split}", value, retraining.generation)
        self.writer.flush()

    def close(self) -> None:
        """Write what is buffered and close the event file."""
        if self.writer is not None:
            self.writer.close()
