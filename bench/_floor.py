"""The floor: the least any Python gateway on this server stack can add.

    python -m bench._floor --port 9000 --upstream http://127.0.0.1:8003

A raw ASGI app on uvicorn (httptools, uvloop when installed, no access log), the server stack
the Paddock gateway runs on, that forwards each POST as it is to `--upstream` over one pooled
aiohttp session (the gateway's own upstream client) and relays the answer, streamed or not. No
auth, no policy, no record: whatever latency it adds is the price of receiving, sending and
relaying in one Python process, which no gateway built on this stack can go below.
`bench.gateway` runs it beside Paddock so each figure has its floor next to it.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "host"}


class Floor:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["method"] != "POST":  # the readiness probe
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {
            k.decode(): v.decode()
            for k, v in scope["headers"]
            if k.decode() not in _HOP_BY_HOP and k != b"authorization"
        }
        assert self.session is not None
        url = self.upstream + scope["path"]
        async with self.session.post(url, data=body, headers=headers) as r:
            out = [(b"content-type", r.headers.get("content-type", "").encode())]
            if r.headers.get("content-type", "").startswith("text/event-stream"):
                await send({"type": "http.response.start", "status": r.status, "headers": out})
                async for chunk in r.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await r.read()
            out.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": r.status, "headers": out})
            await send({"type": "http.response.body", "body": data})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=1000), trust_env=False
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = Floor(args.upstream)
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
