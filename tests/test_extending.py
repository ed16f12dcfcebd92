"""The README's "Extending genesis" examples, run as written: a strategy, a backend and a
report section registered from outside the package and used end to end."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, SMALL_SPACE, TINY

import genesis
from genesis.core.records import TIMING_FIELDS


def _examples() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Extending genesis\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def examples():
    blocks = _examples()
    assert len(blocks) == 3, "the section shows a strategy, a backend and a report section"
    return blocks


def _without_timings(records):
    return [{k: v for k, v in r.to_dict()["metrics"].items() if k not in TIMING_FIELDS}
            | {k: v for k, v in r.to_dict().items() if k != "metrics"} for r in records]


def test_the_readme_strategy_runs_through_evolve(examples, tmp_path, capsys):
    code = (examples[0].replace("benchmarks/results/table-quick", str(REPO / "benchmarks/results/table-quick"))
            .replace('"runs/replays"', repr(str(tmp_path))))
    namespace: dict = {}
    exec(compile(code, "README strategy example", "exec"), namespace)
    run = namespace["run"]
    assert run.config["evolution"]["strategy"] == "one-plus-lambda"
    later = [r for r in run.records if r.generation > 0]
    assert later and all(r.operator == "mutation" and len(r.parents) == 1 for r in later)
    best_before = {g: min(r.outcome.val_loss for r in run.records if r.generation < g) for g in (1, 2, 3)}
    for record in later:  # each child's parent is the best genome of the generations before it
        parent = next(r for r in run.records if r.genome_id == record.parents[0])
        assert parent.outcome.val_loss == best_before[record.generation]
    assert float(capsys.readouterr().out) > 1


def test_the_readme_backend_gives_the_records_of_the_in_process_one(examples, tmp_path, data_folder):
    exec(compile(examples[1], "README backend example", "exec"), {})
    settings = dict(population=4, generations=2, search_space=SMALL_SPACE, recipe=TINY, data=data_folder,
                    device="cpu", threads=1, noise_probes=0, confirm=0)
    ours = genesis.evolve(backend="smallest-first", output=tmp_path / "ours", **settings)
    theirs = genesis.evolve(backend="inprocess", output=tmp_path / "theirs", **settings)
    assert ours.config["evaluator"]["backend"] == "smallest-first"
    assert _without_timings(ours.records) == _without_timings(theirs.records)


def test_the_readme_report_section_reaches_every_output(examples, tmp_path, table):
    exec(compile(examples[2], "README report example", "exec"), {})
    run = genesis.evolve(population=4, generations=2, search_space=SMALL_SPACE, recipe=TINY,
                         backend=f"table:{table}", storage="memory", output=tmp_path, noise_probes=0, confirm=0)
    report = genesis.build_report(run.path)
    assert [row["generation"] for row in report["size"]] == [0, 1]
    written = genesis.write_report(report, tmp_path / "report")
    assert "Model size by generation" in written["md"].read_text()
    assert "Model size by generation" in written["html"].read_text()
