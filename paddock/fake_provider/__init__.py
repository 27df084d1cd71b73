"""The fake LLM provider Paddock ships: a real server speaking the OpenAI protocol (models, chat
completions, responses, embeddings, moderations) and the Anthropic protocol (messages,
count_tokens), stream and not, with deterministic answers.

For demos without a provider key and for tests: it calls tools, fails, stalls and breaks off on
demand (see `_script` for the triggers). `GET /_fake/stats` tells how many requests reached it.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from ._anthropic import add_anthropic_routes, anthropic_error
from ._openai import add_openai_routes, openai_error
from ._script import DEFAULT_REPLY, FakeState

__all__ = ["DEFAULT_REPLY", "FakeState", "create_fake_provider"]

DEFAULT_MODELS = ("fake-gpt", "fake-mini", "fake-claude", "fake-embed", "fake-moderation")


def create_fake_provider(
    *,
    model_ids: Sequence[str] = DEFAULT_MODELS,
    api_key: str | None = None,
    state: FakeState | None = None,
) -> FastAPI:
    """The fake provider app. With `api_key`, requests must carry it (`Authorization: Bearer`
    or, as Anthropic clients send it, `x-api-key`). `state` lets a test see what it received."""
    models = tuple(model_ids)
    app = FastAPI(title="Paddock fake provider")
    state = state or FakeState()
    app.state.fake = state

    def refuse(request: Request) -> Response | None:
        if api_key is None:
            return None
        presented = request.headers.get("x-api-key") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if presented == api_key:
            return None
        if request.url.path.startswith("/v1/messages"):
            return anthropic_error(401, "invalid x-api-key")
        return openai_error(401, "invalid API key", code="invalid_api_key")

    add_openai_routes(app, models, refuse, state)
    add_anthropic_routes(app, models, refuse, state)

    @app.get("/_fake/stats")
    async def stats() -> JSONResponse:
        return JSONResponse({"requests": state.requests})

    return app
