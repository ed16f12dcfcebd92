"""Helpers shared by the benchmark scripts: machine facts, results files, README tables."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import torch

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
README = BENCHMARKS / "README.md"


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 20) -> float:
    """Best measured GFLOP/s of a square matmul in `dtype` (the hardware reference)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def write_results(name: str, results: dict) -> Path:
    """Write `results` to benchmarks/results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has: --data and --render-only."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--data", help="local WikiText folder (required unless --render-only)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the README table from the last results, measuring nothing")
    return parser


def rendered_only(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str, render) -> bool:
    """Handle --render-only (rewrite the README from saved results); demand --data otherwise."""
    if args.render_only:
        update_readme(name, render(read_results(name)))
        return True
    if not args.data:
        parser.error("--data is required")
    return False


def read_results(name: str) -> dict:
    """The last results written by `write_results(name, ...)`."""
    return json.loads((RESULTS / f"{name}.json").read_text())


def update_readme(name: str, markdown: str) -> None:
    """Replace the block between `<!-- name:start -->` and `<!-- name:end -->` in the README."""
    text = README.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    README.write_text(text)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def http_json(url: str, body: dict | None = None, timeout: float = 300) -> tuple[int, dict]:
    """(status, JSON) of a GET, or of a POST of `body` as JSON; an HTTP error status is
    returned, not raised."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def start_server(location: str, wait_s: float = 180) -> tuple[subprocess.Popen, str]:
    """`genesis colony serve` on the colony at `location`, on a free loopback port, once it
    answers /api/health; returns the process (its output piped) and its base URL.

    Raises:
        RuntimeError: the server exited, or did not answer within `wait_s`.
    """
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "genesis", "colony", "serve", location, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + wait_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if http_json(f"{url}/api/health", timeout=10)[0] == 200:
                return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server for {location} did not start: {process.communicate()[0][-2000:]}")


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Callable[[], str]]:
    """A PostgreSQL server on loopback in a temporary folder, started with the system's
    `initdb` and `pg_ctl` (as the `postgres` user when run as root, which PostgreSQL
    refuses) and removed afterwards; yields a function that creates a fresh database
    and returns its URL."""
    import psycopg

    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="genesis-pg-"))
    if as_user:
        shutil.chown(folder, "postgres")
    port, data = free_port(), str(folder / "data")
    subprocess.run([*as_user, "initdb", "-D", data, "-U", "genesis", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, "pg_ctl", "-D", data, "-l", str(folder / "log"), "-w", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
                   check=True, capture_output=True)
    made = []

    def new_database() -> str:
        name = f"colony{len(made)}"
        with psycopg.connect(f"postgresql://genesis@127.0.0.1:{port}/postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return f"postgresql://genesis@127.0.0.1:{port}/{name}"

    try:
        yield new_database
    finally:
        subprocess.run([*as_user, "pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
