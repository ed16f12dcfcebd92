"""One summary of a run, from its records and retrainings: what `summary.json`, the end
of `genesis evolve`, `genesis runs` and the report all show. Pure Python."""

from __future__ import annotations

import math
from typing import Any, Sequence

from genesis.core.noise import CONFIRM, PROBE, Retraining, confirmed_champions, noise_floor
from genesis.core.records import Record, best_records


def summarize(records: Sequence[Record], retrainings: Sequence[Retraining] = (),
              logbook: Sequence[dict[str, Any]] = (), confirm: int = 0,
              baselines: dict[str, float] | None = None) -> dict[str, Any]:
    """Totals, compute, the best genomes at selection, the noise floor, the `confirm`
    confirmed champions of a run and, given the corpus's count-based `baselines`
    (`genesis.train.ngram`), how far the best genome got past them."""
    search_tokens = sum(r.compute_tokens for r in records)
    best = best_records(records, 5)
    probe_tokens = sum(r.outcome.tokens for r in retrainings if r.kind == PROBE)
    confirm_tokens = sum(r.outcome.tokens for r in retrainings if r.kind == CONFIRM)
    return {
        "generations": list(logbook),
        "best": [r.to_dict() for r in best],
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
        "baselines": baselines,
        # negative: the best validation loss is below the bigram model's (it learned more)
        "best_minus_bigram": (best[0].outcome.fitness - baselines["bigram_val"]
                              if baselines and best and math.isfinite(best[0].outcome.fitness) else None),
    }


def baseline_note(baselines: dict[str, float] | None, best_minus_bigram: float | None) -> str:
    """One sentence on the count-based baselines of the run's text and where the best
    genome stands against the bigram model (empty for runs that did not record them)."""
    if not baselines:
        return ""
    where = ("" if best_minus_bigram is None else
             f"; the best genome is {abs(best_minus_bigram):.3f} nats {'below' if best_minus_bigram < 0 else 'above'} "
             f"the bigram model ({'it learned more than word pairs' if best_minus_bigram < 0 else 'not yet past word pairs'})")
    return (f" Baselines of this text (validation): unigram {baselines['unigram_val']:.3f} nats "
            f"(ppl {math.exp(baselines['unigram_val']):.1f}), Kneser-Ney bigram {baselines['bigram_val']:.3f} "
            f"(ppl {math.exp(baselines['bigram_val']):.1f}){where}.")
