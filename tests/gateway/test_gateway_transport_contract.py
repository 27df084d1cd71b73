"""One contract for the `UpstreamTransport` port, run against every implementation (aiohttp, the
default; httpx over its real network transport) and the real fake provider on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest

from gateway._transport import AiohttpTransport, HttpxTransport, UpstreamTransport, loopback_only
from paddock_core import UpstreamError
from tests.gateway.harness import FAKE_PROVIDER_KEY

T = TypeVar("T")
AUTH = {"authorization": f"Bearer {FAKE_PROVIDER_KEY}", "content-type": "application/json"}


def _aiohttp() -> UpstreamTransport:
    return AiohttpTransport(
        connect_timeout_s=2, read_timeout_s=5, max_connections=10, host_filter=loopback_only
    )


def _httpx() -> UpstreamTransport:
    return HttpxTransport(httpx.AsyncHTTPTransport(), connect_timeout_s=2, read_timeout_s=5)


@pytest.fixture(params=[_aiohttp, _httpx], ids=["aiohttp", "httpx"])
def run(
    request: pytest.FixtureRequest,
) -> Callable[[Callable[[UpstreamTransport], Awaitable[T]]], T]:
    make: Callable[[], UpstreamTransport] = request.param

    def go(work: Callable[[UpstreamTransport], Awaitable[T]]) -> T:
        async def main() -> T:
            transport = make()
            try:
                return await work(transport)
            finally:
                await transport.aclose()

        return asyncio.run(main())

    return go


def _body(content: str, **extra: object) -> bytes:
    messages = [{"role": "user", "content": content}]
    return json.dumps({"model": "fake-gpt", "messages": messages, **extra}).encode()


def test_a_whole_answer_is_read(run: Callable[..., object], fake_provider_url: str) -> None:
    async def work(t: UpstreamTransport) -> None:
        url = f"{fake_provider_url}/v1/chat/completions"
        response = await t.send("fake", url, AUTH, _body("ECHO:c1"), stream=False)
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        body = json.loads(await response.read())
        assert body["choices"][0]["message"]["content"] == "Fake reply. ECHO:c1"
        await response.aclose()

    run(work)


def test_a_stream_arrives_in_chunks(run: Callable[..., object], fake_provider_url: str) -> None:
    async def work(t: UpstreamTransport) -> None:
        url = f"{fake_provider_url}/v1/chat/completions"
        response = await t.send("fake", url, AUTH, _body("SLOW:20", stream=True), stream=True)
        chunks = [chunk async for chunk in response.chunks()]
        await response.aclose()
        assert len(chunks) > 3  # not buffered into one
        assert b"".join(chunks).endswith(b"data: [DONE]\n\n")

    run(work)


def test_errors_keep_their_status_and_body(
    run: Callable[..., object], fake_provider_url: str
) -> None:
    async def work(t: UpstreamTransport) -> None:
        url = f"{fake_provider_url}/v1/chat/completions"
        response = await t.send("fake", url, AUTH, _body("FAIL:429"), stream=True)
        assert response.status == 429
        assert b"rate_limit_error" in await response.read(1000)
        await response.aclose()

    run(work)


def test_a_refused_connection_is_transient(run: Callable[..., object]) -> None:
    async def work(t: UpstreamTransport) -> None:
        with pytest.raises(UpstreamError) as caught:
            await t.send("fake", "http://127.0.0.1:9/v1/x", AUTH, b"{}", stream=False)
        assert caught.value.details == {"reason": "upstream_unreachable", "transient": True}

    run(work)


def test_a_stream_cut_off_is_upstream_stream_broken(
    run: Callable[..., object], fake_provider_url: str
) -> None:
    async def work(t: UpstreamTransport) -> None:
        url = f"{fake_provider_url}/v1/chat/completions"
        response = await t.send("fake", url, AUTH, _body("CUT:2", stream=True), stream=True)
        got = b""
        with pytest.raises(UpstreamError) as caught:
            async for chunk in response.chunks():
                got += chunk
        await response.aclose()
        assert caught.value.details["reason"] == "upstream_stream_broken"
        assert b"Fake " in got

    run(work)


def test_the_default_transport_can_be_held_to_loopback() -> None:
    async def main() -> None:
        transport = _aiohttp()
        try:
            with pytest.raises(UpstreamError) as caught:
                await transport.send("openai", "https://api.openai.com/v1/x", {}, b"", stream=False)
            assert caught.value.details["transient"] is False
            assert "not allowed" in caught.value.message
        finally:
            await transport.aclose()

    asyncio.run(main())
