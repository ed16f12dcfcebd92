"""`genesis colony serve`: a colony over HTTP, for many clients at once.

    GET  /                 the web page: ask, rate, watch agents divide, learn and retire
    GET  /api/health       {"ok": true} once the colony is open
    GET  /api/status       agents (lineage, fitness, learning version), memories, events
    POST /api/ask          {"prompt", "max_tokens"?, "temperature"?, "top_k"?, "seed"?, "recall"?}
    POST /api/feedback     {"memory_id", "continuation" | "score"}

One `Colony` per server process; requests that use the models (asks, teachings) run one
at a time (the agents' weights and caches are shared), while ratings and status reads go
straight to the database.
Several server processes, on one machine or many, may serve one colony: the database
keeps them consistent (see `genesis.colony.database`).

Bounded and closed by default: a request body above `MAX_BODY` bytes is refused (413)
before it is read, every number must be finite and in range, an error never echoes the
input back, and only requests whose Host header names an allowed host are served (so a
web page from elsewhere cannot reach a loopback server through DNS rebinding). There is
no authentication: serve on loopback, or behind a proxy that authenticates.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import Any, Optional, Sequence

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, model_validator
from starlette.middleware.trustedhost import TrustedHostMiddleware

from genesis.colony.colony import Colony
from genesis.errors import GenesisError, NotFound

MAX_PROMPT = 2000  # characters of a prompt or continuation
MAX_TOKENS = 200  # tokens one answer may generate
MAX_BODY = 64 * 1024  # bytes of one request body
MAX_ID = 2**63 - 1  # the largest id the database holds
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


class AskRequest(BaseModel):
    """What a client asks."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    max_tokens: int = Field(30, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.8, gt=0, le=10, allow_inf_nan=False)
    top_k: int = Field(40, ge=1, le=1000)
    seed: Optional[int] = Field(None, ge=0, lt=2**63)
    recall: Optional[int] = Field(None, ge=0, le=32)


class FeedbackRequest(BaseModel):
    """Feedback on an answer: its true continuation, or a score in (0, 1]."""

    memory_id: int = Field(ge=1, le=MAX_ID)
    continuation: Optional[str] = Field(None, min_length=1, max_length=MAX_PROMPT)
    score: Optional[float] = Field(None, gt=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_kind(self) -> FeedbackRequest:
        if (self.continuation is None) == (self.score is None):
            raise ValueError("give either the true continuation or a score")
        return self


def create_app(colony: Colony, allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> FastAPI:
    """The HTTP API and web page of `colony`, answering requests to `allowed_hosts` only."""
    app = FastAPI(title="genesis colony", description=__doc__)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(BodyLimit, limit=MAX_BODY)

    @app.exception_handler(RequestValidationError)
    def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        # where and why only: the input itself (perhaps megabytes) is never sent back
        return JSONResponse(status_code=422, content={"detail": [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in error.errors()]})
    models = threading.Lock()  # one request at a time uses the agents' models
    page = resources.files("genesis.serve").joinpath("page.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "colony": colony.location}

    @app.get("/api/status")
    def status(events: int = Query(20, ge=0, le=1000), retired: int = Query(50, ge=0, le=1000)) -> dict[str, Any]:
        return _answer(lambda: colony.status(events=events, retired=retired))

    @app.post("/api/ask")
    def ask(request: AskRequest) -> dict[str, Any]:
        with models:
            answer = _answer(lambda: colony.ask(request.prompt, request.max_tokens, request.temperature,
                                                request.top_k, request.seed, request.recall))
        return {"text": answer.text, "memory_id": answer.memory_id, "agents": list(answer.agents),
                "weights": list(answer.weights)}

    @app.post("/api/feedback")
    def feedback(request: FeedbackRequest) -> dict[str, Any]:
        if request.score is not None:  # a rating touches the database only: no need to wait for the models
            return {"received": _answer(lambda: colony.rate(request.memory_id, request.score))}
        with models:
            received = _answer(lambda: colony.teach(colony.memory_prompt(request.memory_id), request.continuation,
                                                    request.memory_id))
        return {"received": received}

    return app


def _answer(call):
    """Run `call`; a `GenesisError` becomes a 404 (`NotFound`: no such memory) or a 400, one line."""
    try:
        return call()
    except GenesisError as error:
        raise HTTPException(status_code=404 if isinstance(error, NotFound) else 400, detail=str(error)) from None


class BodyLimit:
    """ASGI middleware: a request whose body exceeds `limit` bytes gets a 413, whether its
    Content-Length says so up front or its chunks add up to it while arriving. The body
    (at most `limit` bytes) is read here and handed on whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            return await _too_large(scope, send, self.limit)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _too_large(scope, send, self.limit)
            more = message.get("more_body", False)
        body = b"".join(chunks)

        async def replay():
            nonlocal body
            if body is None:  # read once: afterwards the app only waits for a disconnect
                return await receive()
            message, body = {"type": "http.request", "body": body, "more_body": False}, None
            return message

        await self.app(scope, replay, send)


async def _too_large(scope, send, limit: int) -> None:
    async def nothing():
        return {"type": "http.disconnect"}

    await JSONResponse(status_code=413, content={"detail": f"request body above {limit} bytes"})(
        scope, nothing, send)


def serve(colony: Colony, host: str = "127.0.0.1", port: int = 8765,
          allowed_hosts: Sequence[str] = ()) -> None:
    """Serve `colony` until interrupted, to requests for loopback, `host` and
    `allowed_hosts` (names or addresses in the Host header)."""
    import uvicorn

    hosts = list(dict.fromkeys([*LOOPBACK_HOSTS, host, *allowed_hosts]))
    uvicorn.run(create_app(colony, hosts), host=host, port=port, log_level="warning")
