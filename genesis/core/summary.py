"""One summary of a run, from its records and retrainings: what `summary.json`, the end
of `genesis evolve`, `genesis runs` and the report all show. Pure Python."""

from __future__ import annotations

from typing import Any, Sequence

from genesis.core.noise import CONFIRM, PROBE, Retraining, confirmed_champions, noise_floor
from genesis.core.records import Record, best_records


def summarize(records: Sequence[Record], retrainings: Sequence[Retraining] = (),
              logbook: Sequence[dict[str, Any]] = (), confirm: int = 0) -> dict[str, Any]:
    """Totals, compute, the best genomes at selection, the noise floor and the `confirm`
    confirmed champions of a run."""
    search_tokens = sum(r.compute_tokens for r in records)
    probe_tokens = sum(r.outcome.tokens for r in retrainings if r.kind == PROBE)
    confirm_tokens = sum(r.outcome.tokens for r in retrainings if r.kind == CONFIRM)
    return {
        "generations": list(logbook),
        "best": [r.to_dict() for r in best_records(records, 5)],
        "evaluations": len(records),
        "trained": sum(1 for r in records if not r.cached),  # models trained (evaluations not cached)
        "trainings": sum(max(1, len(r.outcome.replicates)) for r in records if not r.cached),  # every seed
        "cache_hits": sum(1 for r in records if r.cached),
        "given_up": sum(1 for r in records if not r.cached and r.outcome.stopped_at is not None),
        "compute_tokens": search_tokens + probe_tokens + confirm_tokens,
        "compute": {"search_tokens": search_tokens, "noise_probe_tokens": probe_tokens,
                    "confirmation_tokens": confirm_tokens,
                    "retrainings": len(retrainings)},
        "noise": noise_floor(retrainings, records),
        "confirmed": confirmed_champions(records, retrainings, confirm),
    }
