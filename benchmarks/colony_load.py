"""Colony load: `genesis colony serve` under concurrent clients, on SQLite and on PostgreSQL.

For each database (SQLite in a folder; PostgreSQL on loopback, started here with the
system's initdb and pg_ctl) the same colony is seeded from one bundle, `--servers`
server processes serve it (as machines would share it), and `--clients` client threads
send `--requests` requests in all over loopback: asks, teachings (the true continuation
of an earlier answer, with learning) and ratings, mixed by a seeded draw, bounded in
count and in time. Reported: requests per second, latency percentiles per kind, and the
checks that nothing was lost (every request answered; one memory per answer; every
teaching and rating stored; every agent born once with its weights).

    python benchmarks/colony_load.py --data ../shared/data/wikitext-2-offline
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from colony_scaling import champion_bundle
from common import (
    benchmark_parser,
    http_json,
    machine,
    rendered_only,
    start_server,
    table,
    throwaway_postgres,
    update_readme,
    write_results,
)

MIX = {"ask": 0.6, "teach": 0.2, "rate": 0.2}  # shares of the requests
NEW_TOKENS = 8
COPIES = 3  # agents seeded from the bundle


def start_servers(location: str, count: int) -> tuple[list[subprocess.Popen], list[str]]:
    """`count` server processes on one colony; returns them and their base URLs once up."""
    started = [start_server(location) for _ in range(count)]
    return [process for process, _ in started], [url for _, url in started]


def drive(urls: list[str], clients: int, requests: int, seconds: float, seed: int) -> dict:
    """Send `requests` mixed requests from `clients` threads (round-robin over the
    servers), stopping early at `seconds`; returns what each request got."""
    done: list[dict] = []
    lock = threading.Lock()
    issued = iter(range(requests))
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        draw, answered, first = random.Random(seed * 1000 + index), [], True
        while time.monotonic() < deadline:
            with lock:
                number = next(issued, None)
            if number is None:
                return
            url = urls[number % len(urls)]
            kind = draw.choices(list(MIX), weights=list(MIX.values()))[0] if answered else "ask"
            started = time.perf_counter()
            if kind == "ask":
                status, body = http_json(f"{url}/api/ask", {"prompt": f"The history of the city {number}",
                                                       "max_tokens": NEW_TOKENS, "seed": number})
                memory = body.get("memory_id")
                if status == 200:
                    answered.append(memory)
            else:
                memory = draw.choice(answered)
                feedback = {"continuation": " is long and old"} if kind == "teach" else {"score": draw.random()}
                status, _ = http_json(f"{url}/api/feedback", {"memory_id": memory, **feedback})
            with lock:
                done.append({"kind": kind, "status": status, "memory": memory, "first": first,
                             "seconds": time.perf_counter() - started})
            first = False

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"wall_s": time.perf_counter() - started, "requests": done}


def audit(location: str, done: list[dict]) -> dict:
    """What the colony holds after the load, against what the clients were told."""
    import sqlalchemy as sa

    from genesis.colony.colony import Colony
    from genesis.colony.database import memories_table

    colony = Colony.open(location)
    ok = [r for r in done if r["status"] == 200]
    with colony.store.read() as db:
        memories = db.execute(sa.select(memories_table.c.id, memories_table.c.continuation,
                                        memories_table.c.score)).all()
    status = colony.status(events=10**6)
    agents = colony.agents(alive_only=False)
    births = sum(e["kind"] == "birth" for e in status["events"])
    divisions = sum(e["kind"] == "division" for e in status["events"])
    for agent in agents:
        colony.model(agent)  # every agent's weights are stored and load
    asked = {r["memory"] for r in ok if r["kind"] == "ask"}
    checks = {
        "every request answered 200": len(ok) == len(done),
        "one memory per answer": len(memories) == len(asked) == sum(r["kind"] == "ask" for r in ok),
        "every teaching stored": {m for m, c, _ in memories if c is not None} == {r["memory"] for r in ok
                                                                                 if r["kind"] == "teach"},
        "every rating stored": {m for m, _, s in memories if s is not None} == {r["memory"] for r in ok
                                                                               if r["kind"] == "rate"},
        "every agent born once, with weights": len(agents) == births == COPIES + divisions,
    }
    return {"checks": checks, "agents": len(agents), "alive": len(colony.agents()), "divisions": divisions,
            "learning_updates": sum(a["version"] for a in status["agents"])}


def measure(location: str, servers: int, clients: int, requests: int, seconds: float, seed: int) -> dict:
    """One database: serve, drive, stop, audit."""
    processes, urls = start_servers(location, servers)
    try:
        load = drive(urls, clients, requests, seconds, seed)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)
    done = load["requests"]
    latency = {}
    for kind in ("all", "warm", *MIX):  # warm: without each client's first request (cold models)
        times = sorted(r["seconds"] for r in done
                       if kind in ("all", r["kind"]) or (kind == "warm" and not r["first"]))
        if times:
            latency[kind] = {"count": len(times), "p50_ms": 1000 * statistics.median(times),
                             "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))],
                             "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))], "max_ms": 1000 * times[-1]}
    return {"requests": len(done), "wall_s": load["wall_s"], "requests_per_s": len(done) / load["wall_s"],
            "latency": latency, **audit(location, done)}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--servers", type=int, default=2, help="server processes sharing the colony")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=300, help="requests in all, per database")
    parser.add_argument("--seconds", type=float, default=600, help="stop sending after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundle", help="an agent bundle to use instead of training one")
    args = parser.parse_args()
    if rendered_only(parser, args, "colony_load", render):
        return
    from genesis.colony.bundle import load_bundle
    from genesis.colony.colony import Colony

    results = {"machine": machine(), "servers": args.servers, "clients": args.clients, "mix": MIX,
               "new_tokens": NEW_TOKENS, "copies": COPIES, "seed": args.seed, "databases": {}}
    with tempfile.TemporaryDirectory() as scratch, throwaway_postgres() as new_database:
        scratch = Path(scratch)
        bundle = Path(args.bundle) if args.bundle else champion_bundle(args.data, scratch)
        results["genome"] = load_bundle(bundle).genome.describe()
        for name, location in (("sqlite", str(scratch / "colony")), ("postgresql", new_database())):
            Colony.seed(location, [bundle], copies=COPIES)
            results["databases"][name] = measure(location, args.servers, args.clients, args.requests,
                                                 args.seconds, args.seed)
            print(name, json.dumps(results["databases"][name]["checks"]), flush=True)
    path = write_results("colony_load", results)
    update_readme("colony_load", render(results))
    print(f"wrote {path}")


def render(results: dict) -> str:
    """The README table of a results dict."""
    m = results["machine"]
    head = (f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores); {results['servers']} server processes "
            f"share one colony ({results['copies']} adapter agents of {results['genome']} at the start, default "
            f"settings: division after 25 interactions, cap 6, one learning step per teaching), "
            f"{results['clients']} concurrent clients over loopback, requests "
            f"{', '.join(f'{int(100 * v)}% {k}' for k, v in results['mix'].items())}, "
            f"{results['new_tokens']} new tokens per answer.")
    rows = []
    for name, one in results["databases"].items():
        for kind, latency in one["latency"].items():
            rows.append([name if kind == "all" else "", kind if kind != "warm" else "all but each client's first",
                         str(latency["count"]),
                         f"{one['requests_per_s']:.1f}" if kind == "all" else "",
                         *(f"{latency[k]:.0f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))])
    latency = table(["database", "requests", "count", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    checks = table(["database", *next(iter(results["databases"].values()))["checks"], "agents (alive)",
                    "learning updates"],
                   [[name, *("yes" if ok else "**no**" for ok in one["checks"].values()),
                     f"{one['agents']} ({one['alive']})", str(one["learning_updates"])]
                    for name, one in results["databases"].items()])
    return "\n\n".join([head, latency, checks])


if __name__ == "__main__":
    main()
