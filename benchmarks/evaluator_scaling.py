"""Evaluator scaling: evaluations per hour on each backend, framework overhead, Ray at scale.

1. Evaluations per hour of the default recipe for each backend and worker layout that fits
   this machine (in-process 1x2 threads, processes 2x1, processes 1x2, Ray 2x1): the same
   population is evolved for one generation on each.
2. Framework overhead per training, over a whole default run (8 genomes x 4 generations,
   in process, noise probes and confirmation included): the run's wall time minus the wall
   time of its trainings (build, training, validation of every evaluation and retraining),
   per training and as a share of a training's wall time. It is everything genesis itself
   does across generations: data loading, DEAP selection and breeding, records, the Optuna
   study, checkpoints, kept weights.
3. The wall time of that default `genesis evolve`.
4. Ray orchestration overhead with more workers than cores: a stand-in workload of known
   duration (a task that sleeps) run by 8, 32 and 64 workers on a local Ray instance, once
   to start the workers and then measured; overhead = wall time over the task duration.

    pip install -e ".[ray]"
    python benchmarks/evaluator_scaling.py --data /path/to/wikitext-2

Writes benchmarks/results/evaluator_scaling.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import os
import tempfile
import time

from common import (
    benchmark_parser,
    machine,
    read_results,
    rendered_only,
    table,
    update_readme,
    write_results,
)

LAYOUTS = [  # (backend, workers, threads per evaluation)
    ("inprocess", 1, 2),
    ("processes", 2, 1),
    ("processes", 1, 2),
    ("ray", 2, 1),
]


def measure_layout(backend: str, workers: int, threads: int, data: str, population: int) -> dict:
    import genesis

    with tempfile.TemporaryDirectory() as output:
        started = time.perf_counter()
        # throughput of the search's own trainings: no noise probes or confirmation here
        run = genesis.evolve(population=population, generations=1, data=data, seed=0, output=output,
                             backend=backend, workers=workers, threads=threads, noise_probes=0, confirm=0)
        wall = time.perf_counter() - started
    evaluations = sum(r.outcome.wall_s for r in run.records)
    return {"backend": backend, "workers": workers, "threads": threads, "evaluations": len(run.records),
            "wall_s": wall, "evaluations_per_hour": 3600 * len(run.records) / wall,
            "evaluation_wall_s": evaluations / len(run.records),
            "overhead_s_per_evaluation": (wall - evaluations) / len(run.records)
            if backend == "inprocess" else None}


def measure_default_run(data: str) -> dict:
    """Wall time of `genesis evolve --data DATA` with every other option at its default."""
    import genesis

    with tempfile.TemporaryDirectory() as output:
        started = time.perf_counter()
        run = genesis.evolve(data=data, output=output)
        wall = time.perf_counter() - started
        # read while the run folder exists: retrainings live in it
        trainings = [r.outcome.wall_s for r in run.records if not r.cached]
        trainings += [r.outcome.wall_s for r in run.retrainings]
    bests = run.generation_best()
    training_wall = sum(trainings)
    return {"wall_s": wall, "evaluations": len(run.records), "trainings": len(trainings),
            "first_best_loss": bests[0], "last_best_loss": bests[-1],
            "overhead_s_per_training": (wall - training_wall) / len(trainings),
            "overhead_share": (wall - training_wall) / training_wall}


def with_default_run(default_run: dict) -> dict:
    """The results' entries that come from the default run, framework overhead among them."""
    return {"default_run": default_run,
            "framework_overhead": {  # over the whole multi-generation default run
                "seconds_per_evaluation": default_run["overhead_s_per_training"],
                "share_of_evaluation": default_run["overhead_share"]}}


def _stand_in(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def measure_ray(workers: int, seconds: float) -> dict:
    import ray

    ray.init(_node_ip_address="127.0.0.1", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(_stand_in)
        # Ray starts worker processes lazily, a few at a time: warm up until one wave ran on
        # `workers` distinct processes, so the measured wave times orchestration, not startup.
        for _ in range(30):
            if len(set(ray.get([task.remote(2.0) for _ in range(workers)]))) == workers:
                break
        started = time.perf_counter()
        ray.get([task.remote(seconds) for _ in range(workers)])
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    return {"workers": workers, "task_s": seconds, "wall_s": wall,
            "overhead_share": (wall - seconds) / seconds}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--population", type=int, default=6, help="genomes evaluated per layout")
    parser.add_argument("--task-seconds", type=float, default=5.0, help="stand-in task duration")
    parser.add_argument("--default-run-only", action="store_true",
                        help="measure the default run again and keep the other saved results")
    args = parser.parse_args()
    if rendered_only(parser, args, "evaluator_scaling", render):
        return
    if args.default_run_only:
        results = read_results("evaluator_scaling")
        results.update(with_default_run(measure_default_run(args.data)))
        print(results["default_run"])
        write_results("evaluator_scaling", results)
        update_readme("evaluator_scaling", render(results))
        return

    layouts = []
    for backend, workers, threads in LAYOUTS:
        layouts.append(measure_layout(backend, workers, threads, args.data, args.population))
        print(layouts[-1])
    default_run = measure_default_run(args.data)
    print(default_run)
    ray_rows = []
    for workers in (8, 32, 64):
        ray_rows.append(measure_ray(workers, args.task_seconds))
        print(ray_rows[-1])
    results = {"machine": machine(), "population": args.population, "layouts": layouts,
               "ray_stand_in": ray_rows, **with_default_run(default_run)}
    path = write_results("evaluator_scaling", results)
    update_readme("evaluator_scaling", render(results))
    print(f"wrote {path}")


def render(results: dict) -> str:
    """The README tables of a results dict."""
    m = results["machine"]
    best = max(results["layouts"], key=lambda r: r["evaluations_per_hour"])
    overhead = results["framework_overhead"]
    layout_rows = [[r["backend"], f"{r['workers']}x{r['threads']}", f"{r['evaluations_per_hour']:,.0f}",
                    f"{r['evaluation_wall_s']:.1f}", "**best**" if r is best else ""]
                   for r in results["layouts"]]
    ray_rows = [[str(r["workers"]), f"{r['task_s']:.1f}", f"{r['wall_s']:.2f}", f"{100 * r['overhead_share']:.1f}%"]
                for r in results["ray_stand_in"]]
    return "\n".join([
        f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}): one "
        f"generation of {results['population']} genomes of the default space, `quick` recipe.",
        "",
        table(["backend", "workers x threads", "evaluations / hour", "s per evaluation", ""], layout_rows),
        "",
        f"Framework overhead over a whole default run (4 generations: its wall time minus its "
        f"trainings' wall time): "
        f"{overhead['seconds_per_evaluation']:.3f} s per training, "
        f"{100 * overhead['share_of_evaluation']:.2f}% of a training.",
        "",
        "Ray orchestration overhead on a local instance with more workers than cores "
        "(stand-in task that sleeps; workers started before timing):",
        "",
        table(["workers", "task s", "wall s", "overhead"], ray_rows),
        "",
        table(["target", "measured", "met"], [
            ["framework overhead <= 3% of an evaluation", f"{100 * overhead['share_of_evaluation']:.2f}%",
             "yes" if overhead["share_of_evaluation"] <= 0.03 else "**no**"],
            ["the best worker layout is the default (in-process, all cores)",
             f"best: {best['backend']} {best['workers']}x{best['threads']}",
             "yes" if best["backend"] == "inprocess" else "**no**"],
            ["the default `genesis evolve` finishes in under 5 minutes",
             f"{results['default_run']['wall_s'] / 60:.1f} min ({results['default_run']['evaluations']} evaluations)",
             "yes" if results["default_run"]["wall_s"] < 300 else "**no**"],
            ["Ray orchestration overhead at 64 workers <= 5%",
             f"{100 * results['ray_stand_in'][-1]['overhead_share']:.1f}%",
             "yes" if results["ray_stand_in"][-1]["overhead_share"] <= 0.05 else "**no**"],
        ]),
    ])


if __name__ == "__main__":
    main()
