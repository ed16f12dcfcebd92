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
                 full_tokens: int, early_stop: float = 0.0, keep: float = 0.5, replicates: int = 1,
                 race: bool = False):
        self.store, self.recorder, self.backend = store, recorder, backend
        self.seed, self.observers = seed, observers
        self.rung_steps, self.keep = list(rung_steps), keep
        self.full_tokens, self.early_stop = full_tokens, early_stop
        self.replicates, self.race = replicates, race
        self.incumbent: float | None = None  # when racing: the loss a challenger must match
        self.recorded = {(r.generation, r.index): r for r in previous}
        self.known: dict[str, Outcome] = {r.genome.training_id: r.outcome for r in previous
                                          if r.outcome.status != "lost"}
        self.curves: list[tuple[int, list[float]]] = []  # (generation, curve) of full trainings
        self.raced: list[tuple[int, float]] = []  # (generation, loss) of genomes with every replicate
        for record in previous:
            self._remember(record)

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
        generation = candidates[0].generation if candidates else 0
        bounds = self._give_up_bounds(generation)
        self.incumbent = min((loss for g, loss in self.raced if g < generation), default=None)
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
            if final:
                racing = self._racing_trainings(candidates) if self.race else {}
                self._train_final(alive, racing, bounds, spent, waiting, done, level)
                break
            jobs = [self._job(waiting[g][0].genome, replicate, steps, ())
                    for g in alive for replicate in range(self.replicates)]
            parts: dict[str, dict[int, Outcome]] = {g: {} for g in alive}
            reached: dict[str, Outcome] = {}
            for job, outcome in self.backend.run(jobs):
                g = job.genome.training_id
                parts[g][job.replicate] = outcome
                spent[g] += outcome.tokens
                if len(parts[g]) == self.replicates:
                    reached[g] = combine_replicates([parts[g][r] for r in range(self.replicates)])
            ranked = sorted(alive, key=lambda g: reached[g].fitness)
            entered = len(ranked) + sum(1 for r in ended_at if r >= level)
            promoted_before = sum(1 for r in ended_at if r > level)
            alive = ranked[: max(0, max(1, math.ceil(entered * self.keep)) - promoted_before)]
            for training_id in ranked[len(alive):]:
                self._settle(training_id, reached[training_id], spent[training_id], waiting, done, level)
        return [done[candidate.index] for candidate in candidates]

    def _job(self, genome, replicate: int, steps: int | None, bounds) -> Job:
        """A training of `genome` with its `replicate`'s seed; a full one (no `steps`) of
        replicate 0 keeps its weights."""
        g = genome.training_id
        weights = str(self.store.staged_weights_path(g)) if steps is None and replicate == 0 else None
        return Job(genome, training_seed(self.seed, g, replicate), weights, steps, bounds, replicate=replicate)

    def _train_final(self, alive: list[str], ghosts: dict[str, list[Outcome]], bounds,
                     spent: dict[str, int], waiting: dict[str, list[Candidate]], done: dict[int, Record],
                     level: int) -> None:
        """Full-budget trainings: `replicates` of each genome, or, when racing, one, and
        then one more for each genome only while the mean of its trainings is no worse
        than the incumbent's (SMAC's intensification). `ghosts` holds the trainings of
        this generation's genomes recorded before an interruption: they race again with
        their known outcomes, so a resumed race decides as the first one did."""
        parts: dict[str, dict[int, Outcome]] = {g: {} for g in alive}
        running, trained = alive + list(ghosts), 0
        while running:
            wanted = trained + 1 if self.race else self.replicates
            jobs = [self._job(waiting[g][0].genome, r, None, bounds)
                    for g in running if g not in ghosts for r in range(trained, wanted)]
            for job, outcome in self.backend.run(jobs):
                parts[job.genome.training_id][job.replicate] = outcome
                spent[job.genome.training_id] += outcome.tokens
            for g in running:
                if g in ghosts:
                    parts[g] = dict(enumerate(ghosts[g][:wanted]))
            outcomes = {g: combine_replicates([parts[g][r] for r in sorted(parts[g])]) for g in running}
            going_on = self._still_racing(outcomes, wanted) if self.race else []
            going_on = [g for g in going_on if g not in ghosts or len(ghosts[g]) > wanted]
            for g in running:
                if g not in going_on and g not in ghosts:
                    self._settle(g, outcomes[g], spent[g], waiting, done, level)
            running, trained = going_on, wanted

    def _still_racing(self, outcomes: dict[str, Outcome], trained: int) -> list[str]:
        """The genomes of a racing round, each with `trained` trainings, that get another:
        full trainings, fewer than `replicates`, whose mean is no worse than the
        incumbent's: the best genome of earlier generations that raced to the end, or,
        when there is none, this round's leader."""
        if trained >= self.replicates:
            return []
        full = {g: o.val_loss for g, o in outcomes.items() if o.status == "ok" and o.stopped_at is None
                and o.tokens == self.full_tokens and o.val_loss is not None}
        if not full:
            return []
        incumbent = self.incumbent if self.incumbent is not None else min(full.values())
        return [g for g, loss in full.items() if loss <= incumbent]

    def _racing_trainings(self, candidates: Sequence[Candidate]) -> dict[str, list[Outcome]]:
        """The trainings of this generation's genomes that were raced and recorded before
        an interruption, by training id."""
        recorded = {}
        for candidate in candidates:
            record = self.recorded.get((candidate.generation, candidate.index))
            if (record is not None and record.genome == candidate.genome and not record.cached
                    and record.compute_tokens and record.outcome.status != "lost"
                    and record.rung in (None, len(self.rung_steps) - 1)):
                outcome = record.outcome
                recorded[record.genome.training_id] = ([Outcome.from_dict(r) for r in outcome.replicates]
                                                       or [outcome])
        return recorded

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
        self._remember(record)
        self.store.append(record)
        self.recorder.add(record)
        return self._notify(record)

    def _give_up_bounds(self, generation: int) -> tuple[float | None, ...]:
        """Early-stopping bounds for a generation, from earlier generations' curves."""
        if self.early_stop <= 0:
            return ()
        return give_up_bounds([curve for g, curve in self.curves if g < generation], self.early_stop)

    def _remember(self, record: Record) -> None:
        """Keep what later generations compare with: the curve of a full training (for
        early stopping) and the loss of a genome trained on every replicate (for racing)."""
        outcome = record.outcome
        full = outcome.status == "ok" and outcome.stopped_at is None and outcome.tokens == self.full_tokens
        if full and not record.cached and outcome.curve:
            self.curves.append((record.generation, outcome.curve))
        if full and len(outcome.replicates) == self.replicates > 1:
            self.raced.append((record.generation, outcome.val_loss))

    def _notify(self, record: Record) -> Record:
        for observer in self.observers:
            observer.on_evaluation(record)
        return record
