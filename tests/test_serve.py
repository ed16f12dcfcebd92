"""`genesis colony serve`: the real server in its own process, many clients at once, and
the web page driven in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import missing

from benchmarks.common import http_json, start_server
from genesis.colony.colony import Colony
from genesis.colony.settings import ColonySettings

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _serve(tmp_path, bundles, settings: ColonySettings):
    """Seed a colony and start `genesis colony serve` on it; returns (process, base URL)."""
    Colony.seed(tmp_path / "colony", bundles, settings)
    return start_server(str(tmp_path / "colony"), wait_s=120)


@pytest.fixture
def served(tmp_path, bundles):
    """Serve a colony seeded with given settings; the servers stop after the test."""
    processes = []

    def start(settings: ColonySettings) -> str:
        process, base = _serve(tmp_path / f"c{len(processes)}", bundles, settings)
        processes.append(process)
        return base

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def quiet_server(served):
    """A served colony whose agents learn but never divide (so counts are exact)."""
    return served(ColonySettings(division_threshold=1000, adapt_steps=1))


@pytest.fixture
def busy_server(served):
    """A served colony whose agents divide at every answer, above a cap of three."""
    return served(ColonySettings(division_threshold=1, population_cap=3))


def test_concurrent_clients_lose_no_answer_feedback_or_update(quiet_server):
    def client(index: int) -> list[int]:
        status, answer = http_json(f"{quiet_server}/api/ask", {"prompt": f"Prompt {index}", "max_tokens": 3, "seed": index})
        taught, _ = http_json(f"{quiet_server}/api/feedback", {"memory_id": answer["memory_id"], "continuation": " city"})
        rated, _ = http_json(f"{quiet_server}/api/feedback", {"memory_id": answer["memory_id"], "score": 0.8})
        return [status, taught, rated, answer["memory_id"]]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(8)))
    assert all(r[:3] == [200, 200, 200] for r in results)
    assert sorted(r[3] for r in results) == list(range(1, 9))  # one memory per answer, none shared
    status = http_json(f"{quiet_server}/api/status?events=100")[1]
    assert status["memories"] == 8
    for agent in status["agents"]:  # every answer counted, every teaching learned, by every agent
        assert agent["total_interactions"] == 8 and agent["version"] == 8


def test_bad_requests_get_one_clear_error_and_change_nothing(quiet_server):
    for body in ({"prompt": "x" * 5000}, {"prompt": "The", "max_tokens": 10_000}, {"prompt": ""}, {}):
        assert http_json(f"{quiet_server}/api/ask", body)[0] == 422
    status, error = http_json(f"{quiet_server}/api/feedback", {"memory_id": 42, "score": 0.5})
    assert status == 404 and error["detail"] == "no memory 42"
    status, error = http_json(f"{quiet_server}/api/feedback", {"memory_id": 1, "score": 0.5, "continuation": " a"})
    assert status == 422 and "either the true continuation or a score" in json.dumps(error)
    assert http_json(f"{quiet_server}/api/status")[1]["memories"] == 0


def _raw(base: str, path: str, body: bytes | None = None, host: str | None = None, chunked: bool = False):
    """(status, body text) of a request sent as given: any bytes, any Host header."""
    import http.client
    from urllib.parse import urlparse

    address = urlparse(base)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
    if chunked:
        connection.request("POST", path, body=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                           headers=headers, encode_chunked=True)
    else:
        connection.request("POST" if body is not None else "GET", path, body=body, headers=headers)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    return response.status, text


def test_the_server_bounds_bodies_never_echoes_input_and_answers_allowed_hosts_only(quiet_server):
    huge = json.dumps({"prompt": "y" * 300_000}).encode()
    assert _raw(quiet_server, "/api/ask", huge)[0] == 413
    assert _raw(quiet_server, "/api/ask", huge, chunked=True)[0] == 413  # no Content-Length to trust
    status, text = _raw(quiet_server, "/api/ask", json.dumps({"prompt": "z" * 5000}).encode())
    assert status == 422 and "zzzz" not in text  # where and why, never the input
    for body in (b'{"prompt": "The", "temperature": NaN}', b'{"prompt": "The", "temperature": Infinity}',
                 b'{"memory_id": 1, "score": NaN}', b'{"memory_id": 100000000000000000000000, "score": 0.5}'):
        assert _raw(quiet_server, "/api/" + ("ask" if b"prompt" in body else "feedback"), body)[0] == 422
    assert _raw(quiet_server, "/api/health", host="attacker.example")[0] == 400  # DNS rebinding
    assert _raw(quiet_server, "/api/health", host="localhost:8765")[0] == 200
    assert http_json(f"{quiet_server}/api/status?events=5000")[0] == 422
    assert http_json(f"{quiet_server}/api/status")[1]["memories"] == 0


def test_the_page_asks_rates_and_shows_agents_divide_and_retire_in_a_real_browser(busy_server, tmp_path):
    if CHROMIUM is None:
        missing("Debian's chromium is not installed (.ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page()
        page.goto(busy_server)
        page.wait_for_function("document.querySelectorAll('#agents tr').length === 2")
        assert page.is_disabled("#rate-good")
        page.fill("#prompt", "The history of the city")
        page.click("#ask")
        page.wait_for_function("document.getElementById('answer-meta').textContent.startsWith('memory 1')")
        assert page.text_content("#answer").startswith("The history of the city")
        # both agents answered and divided; above the cap of three the weakest retired
        page.wait_for_function("document.querySelectorAll('#agents tr').length === 4")
        assert page.locator("#agents tr.retired").count() == 1
        assert "└" in page.text_content("#agents")
        page.click("#rate-good")
        page.wait_for_function("document.getElementById('answer-meta').textContent.startsWith('rated 0.9')")
        page.fill("#continuation", " is long and old")
        page.click("#teach")
        page.wait_for_function("document.getElementById('answer-meta').textContent.startsWith('taught')")
        page.wait_for_function("document.getElementById('summary').textContent.includes('1 memories')")
        # the table refreshes on its next poll after the teaching: every living agent learned once
        page.wait_for_function("(() => { const cells = [...document.querySelectorAll("
                               "'#agents tr:not(.retired) td:nth-child(5)')].map((c) => c.textContent);"
                               " return cells.length > 0 && cells.every((v) => v === '1'); })()")
        learned = page.locator("#agents tr:not(.retired) td:nth-child(5)").all_text_contents()
        assert learned and all(v == "1" for v in learned)
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    status = http_json(f"{busy_server}/api/status")[1]
    assert status["memories"] == 1 and sum(a["status"] == "alive" for a in status["agents"]) == 3
