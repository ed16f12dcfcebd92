"""No behaviour change: the records of short runs, pinned before the code moved.

Every strategy, with successive halving and early stopping, replayed on a table of the
small space, and one short run of real training: every field but wall-clock timings
must equal the pinned file; measured numbers to 2% (the table itself is trained in the
session, and float reductions differ between CPU models: torch picks its kernels by
instruction set, so the last digits of a loss move from one machine to the next; every
choice the runs make, which genome, which operator, which id, must still match exactly). A deliberate change of behaviour re-pins with
`GENESIS_REPIN=1 python -m pytest tests/test_pinned.py` and says why in its commit.
"""

from __future__ import annotations

import json
import math
import os

from conftest import CURVES, FIXTURES, SMALL_SPACE, TINY

import genesis
from genesis.core.records import TIMING_FIELDS

PINNED = FIXTURES / "pinned_records.json"
STRATEGIES = ("evolution", "aging", "random", "nsga2", "tpe", "nsga2-optuna")
FIDELITIES = {"full": {}, "halving": {"rungs": (0.25, 0.5, 1.0)}, "early-stop": {"early_stop": 0.5}}


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _pinned(run: genesis.Run) -> dict:
    return {"records": _without_timings([r.to_dict() for r in run.records]),
            "retrainings": _without_timings([r.to_dict() for r in run.retrainings]),
            "summary": _without_timings(run.summary())}


def _differences(got, pinned, path: str = "") -> list[str]:
    """Where `got` departs from `pinned`: any key, length, string or integer, or a float
    more than 2% (or 1e-3) away."""
    if isinstance(pinned, dict) and isinstance(got, dict):
        if sorted(got) != sorted(pinned):
            return [f"{path}: keys {sorted(got)} != {sorted(pinned)}"]
        return [d for key in pinned for d in _differences(got[key], pinned[key], f"{path}/{key}")]
    if isinstance(pinned, list) and isinstance(got, list):
        if len(got) != len(pinned):
            return [f"{path}: {len(got)} items != {len(pinned)}"]
        return [d for i, (a, b) in enumerate(zip(got, pinned)) for d in _differences(a, b, f"{path}[{i}]")]
    if isinstance(pinned, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if math.isclose(got, pinned, rel_tol=0.02, abs_tol=1e-3) else [f"{path}: {got} != {pinned}"]
    return [] if got == pinned and type(got) is type(pinned) else [f"{path}: {got!r} != {pinned!r}"]


def test_differences_sees_a_changed_choice_and_a_moved_number():
    pinned = {"records": [{"genome_id": "abc", "operator": "mutation", "fitness": 7.6, "index": 0}]}
    assert _differences(json.loads(json.dumps(pinned)), pinned) == []
    assert _differences({"records": [{**pinned["records"][0], "fitness": 7.6001}]}, pinned) == []
    assert _differences({"records": [{**pinned["records"][0], "fitness": 7.9}]}, pinned)
    assert _differences({"records": [{**pinned["records"][0], "operator": "clone"}]}, pinned)
    assert _differences({"records": [{**pinned["records"][0], "index": 1}]}, pinned)


def _runs(tmp_path, curve_table, data_folder) -> dict:
    runs = {}
    for strategy in STRATEGIES:
        for fidelity, settings in FIDELITIES.items():
            run = genesis.evolve(population=6, generations=3, search_space=SMALL_SPACE, recipe=CURVES,
                                 backend=f"table:{curve_table}", storage="memory", seed=5,
                                 output=tmp_path / f"{strategy}-{fidelity}", noise_probes=1, confirm=2,
                                 confirm_seeds=2, evolution=genesis.EvolutionConfig(strategy=strategy),
                                 **settings)
            runs[f"{strategy} {fidelity}"] = _pinned(run)
    trained = genesis.evolve(population=4, generations=2, search_space=SMALL_SPACE, recipe=TINY,
                             data=data_folder, seed=1, output=tmp_path / "trained", device="cpu",
                             threads=1, noise_probes=1, confirm=2, confirm_seeds=2)
    runs["real training"] = _pinned(trained)
    return json.loads(json.dumps(runs))  # tuples as lists, as in the pinned file


def test_the_records_of_every_strategy_are_those_pinned_before_the_move(tmp_path, curve_table, data_folder):
    runs = _runs(tmp_path, curve_table, data_folder)
    if os.environ.get("GENESIS_REPIN"):
        lines = ",\n".join(f"{json.dumps(name)}: {json.dumps(runs[name], sort_keys=True)}" for name in sorted(runs))
        PINNED.write_text("{\n" + lines + "\n}\n")  # one line per run: a change names its run in the diff
    pinned = json.loads(PINNED.read_text())
    assert sorted(runs) == sorted(pinned)
    for name in pinned:
        differences = _differences(runs[name], pinned[name], name)
        assert not differences, f"records differ from the pinned ones: {differences[:5]}"
