"""The caching evaluator of a run: evaluates a generation's candidates on a backend,
reusing what is already known, with successive halving, replicates and early stopping."""

from __future__ import annotations

import math
from typing import Sequence

from genesis.core.records import Outcome, Record, combine_replicates, training_seed
from genesis.runs.backends import Job
from genesis.runs.store import RunStore
from genesis.runs.study import StudyRecorder
from genesis.search.fidelity import give_up_bounds
from genesis.search.loop import Observer
from genesis.search.population import Candidate

KEPT_WEIGHTS = 5  # trained weights kept on disk for this many best genomes, for export


class CachingEvaluator:
    """Evaluates a generation's candidates on a backend, reusing what is already known.

    A candidate recorded before an interruption (same generation, index and genome) is
    taken from the record log as it is. A model trained before is not trained again:
    its training seeds depend only on the run seed and the genome's training identity
    (σ, which never touches training, is left out), so a repeat, or a child that differs
    from its parent in σ only, would reproduce the same outcome, and reusing it is exact
    (a genome given up by early stopping stays given up). Records are written as trainings finish; the trained
    weights of the best genomes so far are kept.

    Early stopping bounds come from the learning curves of full trainings in earlier
    generations only, so they do not depend on the order in which a generation's
    trainings finish, and a resumed run computes the same bounds.
    """

    def __init__(self, store: RunStore, recorder: StudyRecorder, backend, seed: int,
                 observers: Sequence[Observer], previous: Sequence[Record], rung_steps: Sequence[int],
                 full_tokens: int, early_stop: float = 0.0, keep: float = 0.5, replicates: int = 1):
        self.store, self.recorder, self.backend = store, recorder, backend
        self.seed, self.observers = seed, observers
        self.rung_steps, self.keep = list(rung_steps), keep
        self.full_tokens, self.early_stop = full_tokens, early_stop
        self.replicates = replicates
        self.recorded = {(r.generation, r.index): r for r in previous}
        self.known: dict[str, Outcome] = {r.genome.training_id: r.outcome for r in previous
                                          if r.outcome.status != "lost"}
        self.curves: list[tuple[int, list[float]]] = []  # (generation, curve) of full trainings
        for record in previous:
            self._remember_curve(record)

    def __call__(self, candidates: Sequence[Candidate]) -> list[Record]:
        done: dict[int, Record] = {}
        waiting: dict[str, list[Candidate]] = {}  # training id -> candidates awaiting its training
        for candidate in candidates:
            record = self.recorded.get((candidate.generation, candidate.index))
            if record is not None and record.genome == candidate.genome:
                done[candidate.index] = self._notify(record)
            elif candidate.genome.training_id in self.known:
                done[candidate.index] = self._keep(candidate, self.known[candidate.genome.training_id], True)
            else:
                waiting.setdefault(candidate.genome.training_id, []).append(candidate)
        # Successive halving: every new genome trains at the first rung's budget, the best
        # `keep` share of them goes on to the next rung, and so on; only the last rung is
        # the recipe's full budget. A genome stops with the outcome of the last rung it
        # reached, which records its fidelity (tokens). With one rung this is plain training.
        # Each training is `replicates` trainings with their own seeds; the genome's outcome
        # is their mean (`combine_replicates`), and only the first replicate keeps weights.
        bounds = self._give_up_bounds(candidates[0].generation if candidates else 0)
        # Genomes of this generation recorded before an interruption took part in the rungs
        # up to the one they ended at: each cut counts them, so a resumed run promotes the
        # same genomes as an uninterrupted one.
        ended_at = [r.rung for c in candidates
                    if (r := self.recorded.get((c.generation, c.index))) is not None
                    and r.genome == c.genome and r.rung is not None]
        alive = list(waiting)
        spent = dict.fromkeys(waiting, 0)  # training id -> training tokens over all its rungs
        for level, steps in enumerate(self.rung_steps):
            final = level == len(self.rung_steps) - 1
            jobs = [Job(waiting[g][0].genome, training_seed(self.seed, g, replicate),
                        str(self.store.staged_weights_path(g)) if final and replicate == 0 else None,
                        None if final else steps, bounds if final else (), replicate=replicate)
                    for g in alive for replicate in range(self.replicates)]
            parts: dict[str, dict[int, Outcome]] = {g: {} for g in alive}
            reached: dict[str, Outcome] = {}
            for job, outcome in self.backend.run(jobs):
                g = job.genome.training_id
                parts[g][job.replicate] = outcome
                spent[g] += outcome.tokens
                if len(parts[g]) == self.replicates:
                    reached[g] = combine_replicates([parts[g][r] for r in range(self.replicates)])
                    if final:
                        self._settle(g, reached[g], spent[g], waiting, done, level)
            if final:
                break
            ranked = sorted(alive, key=lambda g: reached[g].fitness)
            entered = len(ranked) + sum(1 for r in ended_at if r >= level)
            promoted_before = sum(1 for r in ended_at if r > level)
            alive = ranked[: max(0, max(1, math.ceil(entered * self.keep)) - promoted_before)]
            for training_id in ranked[len(alive):]:
                self._settle(training_id, reached[training_id], spent[training_id], waiting, done, level)
        return [done[candidate.index] for candidate in candidates]

    def _settle(self, training_id: str, outcome: Outcome, compute_tokens: int,
                waiting: dict[str, list[Candidate]], done: dict[int, Record], level: int) -> None:
        """Record a model's final outcome for every candidate that waited for it; the
        first one carries the compute its training cost, the others were free. A lost
        training (the machine's fault, not the genome's) is not remembered."""
        if outcome.status != "lost":
            self.known[training_id] = outcome
        best = sorted(self.known, key=lambda g: self.known[g].rank())[:KEPT_WEIGHTS]
        self.store.settle_weights(training_id, set(best))
        for position, candidate in enumerate(waiting[training_id]):
            done[candidate.index] = self._keep(
                candidate, outcome, cached=position > 0, compute_tokens=0 if position else compute_tokens,
                rung=None if position or len(self.rung_steps) == 1 else level)

    def _keep(self, candidate: Candidate, outcome: Outcome, cached: bool, compute_tokens: int = 0,
              rung: int | None = None) -> Record:
        record = candidate.to_record(outcome, cached=cached, compute_tokens=compute_tokens, rung=rung)
        self._remember_curve(record)
        self.store.append(record)
        self.recorder.add(record)
        return self._notify(record)

    def _give_up_bounds(self, generation: int) -> tuple[float | None, ...]:
        """Early-stopping bounds for a generation, from earlier generations' curves."""
        if self.early_stop <= 0:
            return ()
        return give_up_bounds([curve for g, curve in self.curves if g < generation], self.early_stop)

    def _remember_curve(self, record: Record) -> None:
        outcome = record.outcome
        if (not record.cached and outcome.status == "ok" and outcome.stopped_at is None
                and outcome.tokens == self.full_tokens and outcome.curve):
            self.curves.append((record.generation, outcome.curve))

    def _notify(self, record: Record) -> Record:
        for observer in self.observers:
            observer.on_evaluation(record)
        return record
