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
keeps them consistent (see `genesis.colony.database`). Request sizes are bounded, so a
client cannot make the server allocate without limit.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import Any, Optional

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, model_validator

from genesis.colony.colony import Colony
from genesis.errors import GenesisError, NotFound

MAX_PROMPT = 2000  # characters of a prompt or continuation
MAX_TOKENS = 200  # tokens one answer may generate


class AskRequest(BaseModel):
    """What a client asks."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    max_tokens: int = Field(30, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.8, gt=0, le=10)
    top_k: int = Field(40, ge=1, le=1000)
    seed: Optional[int] = Field(None, ge=0, lt=2**63)
    recall: Optional[int] = Field(None, ge=0, le=32)


class FeedbackRequest(BaseModel):
    """Feedback on an answer: its true continuation, or a score in (0, 1]."""

    memory_id: int = Field(ge=1)
    continuation: Optional[str] = Field(None, min_length=1, max_length=MAX_PROMPT)
    score: Optional[float] = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_kind(self) -> FeedbackRequest:
        if (self.continuation is None) == (self.score is None):
            raise ValueError("give either the true continuation or a score")
        return self


def create_app(colony: Colony) -> FastAPI:
    """The HTTP API and web page of `colony`."""
    app = FastAPI(title="genesis colony", description=__doc__)
    models = threading.Lock()  # one request at a time uses the agents' models
    page = resources.files("genesis.serve").joinpath("page.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "colony": colony.location}

    @app.get("/api/status")
    def status(events: int = 20) -> dict[str, Any]:
        return _answer(lambda: colony.status(events=min(max(events, 0), 1000)))

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


def serve(colony: Colony, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve `colony` until interrupted."""
    import uvicorn

    uvicorn.run(create_app(colony), host=host, port=port, log_level="warning")
