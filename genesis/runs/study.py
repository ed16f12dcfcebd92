"""Every evaluation as a trial of an Optuna study, so Optuna's tools read genesis runs.

The study lives beside the run (`runs/<id>/study.db`, SQLite) or in any database Optuna
accepts (`--storage postgresql://...` for a cluster). Trial params are the genome's
traits with distributions taken from the search space; the value is the fitness
(validation loss); user attributes hold generation, genome id, parents, operator,
status and all metrics. `optuna-dashboard sqlite:///runs/<id>/study.db` opens a run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import optuna
from optuna.trial import TrialState

from genesis.core.records import Record
from genesis.core.space import SearchSpace
from genesis.errors import GenesisError
from genesis.search.strategies.optuna import distributions

STUDY_FILE = "study.db"


MEMORY = "memory"  # a study kept in memory only: fastest, for replays on a sweep table


REDACTED = "***"


def redact(url: str | None) -> str | None:
    """A storage URL without its password, fit to be written into a run folder."""
    from urllib.parse import urlsplit, urlunsplit

    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def storage_for_resume(stored: str | None, given: str | None) -> str | None:
    """The storage URL a resumed run uses. A run folder may come from someone else, so
    its config.json alone never sends trials anywhere but the run's own study file (or
    memory): another stored storage must be given again, in full, with `--storage`
    (which must match the stored one).

    Raises:
        GenesisError: the stored storage is not the run's own and was not given again,
            or the URL given is another one.
    """
    if given is None:
        if stored is not None and stored != MEMORY:
            raise GenesisError(f"the run's study is in {stored}, outside its folder; resume it there only "
                               "by giving the full URL again with --storage")
        return stored
    if redact(given) != stored:
        raise GenesisError(f"--storage {redact(given)} is not the run's storage {stored}")
    return given


def default_storage(run_path: Path) -> str:
    """The SQLite URL of the study file inside a run folder."""
    return f"sqlite:///{(run_path / STUDY_FILE).resolve()}"


class StudyRecorder:
    """Adds run records to an Optuna study, each distinct evaluation exactly once.

    The study tells the truth about fidelity: a training at the run's full budget is a
    COMPLETE trial with the run's objective values (several objectives: a
    multi-objective study, so optuna-dashboard shows its front); a lower successive-
    halving rung or an early-stopped training is PRUNED, with its learning curve (or its
    loss at the tokens it reached) as intermediate values; a failure is FAIL. A cached
    repeat trained nothing and adds no trial.
    """

    def __init__(self, storage: str, study_name: str, space: SearchSpace,
                 objectives: Sequence[str] = ("val_loss",), full_tokens: int | None = None):
        # Optuna announces every new study on stderr; genesis' library code does not print.
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if storage == MEMORY:
            storage = optuna.storages.InMemoryStorage()
        try:
            self.study = optuna.create_study(storage=storage, study_name=study_name,
                                             directions=["minimize"] * len(objectives), load_if_exists=True)
        except Exception as error:  # Optuna raises many types for a bad URL or database
            raise GenesisError(f"cannot open the Optuna storage {redact(str(storage))}: {error}") from None
        finally:
            optuna.logging.set_verbosity(verbosity)
        self.objectives, self.full_tokens = tuple(objectives), full_tokens
        self.distributions = distributions(space)
        self.known = {
            (t.user_attrs.get("generation"), t.user_attrs.get("index"))
            for t in self.study.get_trials(deepcopy=False)
        }

    def add(self, record: Record) -> None:
        """Add `record` as a trial unless it is already there or a cached repeat."""
        key = (record.generation, record.index)
        if key in self.known or record.cached:
            return
        outcome = record.outcome
        full = outcome.stopped_at is None and (self.full_tokens is None or outcome.tokens >= self.full_tokens)
        values = [outcome.objective(name) for name in self.objectives]
        metrics = {k: v for k, v in outcome.to_dict().items() if v is not None and k != "replicates"}
        if outcome.status != "ok" or not all(math.isfinite(v) for v in values):
            state, intermediate = TrialState.FAIL, {}
        elif full:
            state, intermediate = TrialState.COMPLETE, {}
        else:
            state = TrialState.PRUNED
            intermediate = ({step: value for step, value in enumerate(outcome.curve)} if outcome.curve
                            else {outcome.tokens: outcome.fitness})
        trial = optuna.trial.create_trial(
            state=state,
            values=values if state == TrialState.COMPLETE else None,
            params={name: getattr(record.genome, name) for name in self.distributions},
            distributions=self.distributions,
            intermediate_values=intermediate,
            user_attrs={
                "generation": record.generation,
                "index": record.index,
                "genome_id": record.genome_id,
                "training_id": record.genome.training_id,
                "parents": list(record.parents),
                "operator": record.operator,
                **metrics,
            },
        )
        self.study.add_trial(trial)
        self.known.add(key)
