#!/usr/bin/env python3
"""Paddock probe runner: a tiny stand-in for OpenClaw that honours the runner contract.

Boot: GET ${PADDOCK_GATEWAY_URL}/models must answer 200 within ~10 s, else exit 3.
Serve on 0.0.0.0:18789: GET /healthz, GET /readyz, GET /v1/models, POST /v1/chat/completions.
A chat turn is forwarded to ${PADDOCK_GATEWAY_URL}/chat/completions with model ${PADDOCK_MODEL}.
Test hook: a last user message "!probe {json}" runs that action here instead (see run_probe).
Stdlib only.
"""
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 18789
MAX_BODY = 8 * 1024 * 1024
OUT_CAP = 64 * 1024
REQUIRED = ("PADDOCK_GATEWAY_URL", "PADDOCK_RUNNER_TOKEN", "PADDOCK_MODEL", "OPENCLAW_GATEWAY_TOKEN")
ENV = os.environ
GW = ENV.get("PADDOCK_GATEWAY_URL", "").rstrip("/")
MODEL = ENV.get("PADDOCK_MODEL", "")
# Never use proxies from the environment: the runner talks to the gateway only.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SESSIONS = {}  # session key -> prior messages (bounded)
SESSIONS_LOCK = threading.Lock()
MAX_SESSIONS = 256


def log(msg):
    print(f"paddock-probe: {msg}", file=sys.stderr, flush=True)


def gw_headers():
    return {"Authorization": f"Bearer {ENV.get('PADDOCK_RUNNER_TOKEN', '')}",
            "Content-Type": "application/json", "Accept": "application/json"}


def boot_check(budget=10.0):
    missing = [n for n in REQUIRED if not ENV.get(n)]
    if missing:
        log(f"missing required env: {', '.join(missing)}")
        sys.exit(2)
    deadline, last = time.monotonic() + budget, "no attempt"
    while True:
        left = deadline - time.monotonic()
        try:
            req = urllib.request.Request(GW + "/models", headers=gw_headers())
            with OPENER.open(req, timeout=max(0.5, min(3.0, left))) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if e.code in (401, 403):
                break  # a bad token does not get better by retrying
        except Exception as e:  # noqa: BLE001 - any failure is a reason
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() + 0.5 >= deadline:
            break
        time.sleep(0.5)
    log(f"gateway check failed: GET {GW}/models -> {last}")
    sys.exit(3)


def text_of(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _err(e):
    return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def run_probe(spec):
    """Run one confinement probe; always returns a JSON-able dict with "ok"."""
    op = spec.get("op")
    timeout = float(spec.get("timeout", 3))
    try:
        if op == "http":
            req = urllib.request.Request(spec["url"], method=str(spec.get("method", "GET")).upper())
            try:
                with OPENER.open(req, timeout=timeout) as r:
                    return {"ok": True, "status": r.status}
            except urllib.error.HTTPError as e:  # a response arrived: the path is open
                return {"ok": True, "status": e.code}
        if op == "tcp":
            with socket.create_connection((spec["host"], int(spec["port"])), timeout=timeout):
                return {"ok": True}
        if op == "resolve":
            infos = socket.getaddrinfo(spec["name"], None)
            return {"ok": True, "addresses": sorted({i[4][0] for i in infos})}
        if op == "write":
            with open(spec["path"], "w") as f:
                f.write(spec.get("content", "paddock-probe\n"))
            return {"ok": True}
        if op == "read":
            with open(spec["path"], "rb") as f:
                data = f.read(OUT_CAP)
            return {"ok": True, "content": data.decode("utf-8", "replace")}
        if op == "env":
            return {"ok": True, "names": sorted(ENV)}
        if op == "exec":
            return run_exec(spec, float(spec.get("timeout", 10)))
        return {"ok": False, "error": f"unknown op {op!r}"}
    except Exception as e:  # noqa: BLE001
        return _err(e)


def run_exec(spec, timeout):
    argv = spec.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return {"ok": False, "error": "argv must be a non-empty list of strings"}
    mode = ENV.get("PADDOCK_EXEC_MODE", "deny")
    if mode == "allowlist":
        allowed = {a.strip() for a in ENV.get("PADDOCK_EXEC_ALLOWLIST", "").split(",") if a.strip()}
        if argv[0] not in allowed:
            return {"ok": False, "error": f"exec refused: {argv[0]!r} not in allowlist"}
    elif mode != "full":
        return {"ok": False, "error": f"exec refused: PADDOCK_EXEC_MODE={mode}"}
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except Exception as e:  # noqa: BLE001
        return _err(e)
    return {"ok": True, "returncode": p.returncode,
            "stdout": p.stdout[:OUT_CAP].decode("utf-8", "replace"),
            "stderr": p.stderr[:OUT_CAP].decode("utf-8", "replace")}


def remember(key, messages, reply):
    if not key:
        return
    with SESSIONS_LOCK:
        SESSIONS.pop(key, None)
        SESSIONS[key] = messages + [{"role": "assistant", "content": reply}]
        while len(SESSIONS) > MAX_SESSIONS:
            SESSIONS.pop(next(iter(SESSIONS)))


class Handler(BaseHTTPRequestHandler):
    server_version = "paddock-probe/1"

    def log_message(self, fmt, *args):
        log(f"{self.address_string()} {fmt % args}")

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, code, message, kind="invalid_request_error"):
        self.send_json(code, {"error": {"message": message, "type": kind}})

    def authorized(self):
        want = f"Bearer {ENV.get('OPENCLAW_GATEWAY_TOKEN', '')}".encode()
        got = self.headers.get("Authorization", "").encode()
        if hmac.compare_digest(got, want):
            return True
        self.error(401, "unauthorized", "unauthorized")
        return False

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/health"):
            return self.send_json(200, {"ok": True, "status": "live"})
        if path in ("/readyz", "/ready"):
            return self.send_json(200, {"ok": True, "status": "ready"})
        if path == "/v1/models" and self.authorized():
            return self.send_json(200, {"object": "list", "data": [
                {"id": "openclaw/default", "object": "model", "owned_by": "paddock-probe"}]})
        if path != "/v1/models":
            self.error(404, "not found", "not_found")

    do_HEAD = do_GET

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/v1/chat/completions":
            return self.error(404, "not found", "not_found")
        if not self.authorized():
            return
        n = int(self.headers.get("Content-Length") or 0)
        if n <= 0 or n > MAX_BODY:
            return self.error(400 if n <= 0 else 413, "body required (max 8 MiB)")
        try:
            body = json.loads(self.rfile.read(n))
            messages = body["messages"]
            assert isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)
        except Exception:  # noqa: BLE001
            return self.error(400, "expected a JSON object with a non-empty messages list")
        stream = bool(body.get("stream"))
        key = self.headers.get("x-openclaw-session-key") or body.get("user") or ""
        with SESSIONS_LOCK:
            history = list(SESSIONS.get(key, [])) if key else []
        convo = history + messages
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        text = text_of(last_user.get("content")) if last_user else ""
        if text.startswith("!probe "):
            try:
                spec = json.loads(text[len("!probe "):])
                result = run_probe(spec) if isinstance(spec, dict) else {"ok": False, "error": "not an object"}
            except ValueError as e:
                result = {"ok": False, "error": f"bad probe JSON: {e}"}
            reply = json.dumps(result)
            remember(key, convo, reply)
            return self.local_reply(reply, stream, body.get("model") or "openclaw/default")
        self.forward(convo, stream, key)

    def local_reply(self, content, stream, model):
        cid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        if not stream:
            return self.send_json(200, {"id": cid, "object": "chat.completion", "created": now, "model": model,
                                        "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": content}}],
                                        "usage": usage})
        self.start_sse()
        base = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model}
        for delta, fin in (({"role": "assistant", "content": content}, None), ({}, "stop")):
            self.sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]})
        self.sse({**base, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def start_sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

    def sse(self, obj):
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        self.wfile.flush()

    def forward(self, convo, stream, key):
        payload = {"model": MODEL, "messages": convo, "stream": stream}
        if stream:
            payload["stream_options"] = {"include_usage": True}
        req = urllib.request.Request(GW + "/chat/completions", data=json.dumps(payload).encode(),
                                     headers=gw_headers(), method="POST")
        try:
            upstream = OPENER.open(req, timeout=300)
        except urllib.error.HTTPError as e:  # relay the gateway's verdict (401/402/429/...) as is
            data = e.read()
            self.send_response(e.code)
            self.send_header("Content-Type", e.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        except Exception as e:  # noqa: BLE001
            return self.error(502, f"gateway unreachable: {type(e).__name__}: {e}", "upstream_error")
        with upstream:
            if not stream:
                data = upstream.read()
                self.send_response(upstream.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                try:
                    remember(key, convo, json.loads(data)["choices"][0]["message"].get("content") or "")
                except Exception:  # noqa: BLE001
                    pass
                return
            self.start_sse()
            parts = []
            for line in upstream:
                self.wfile.write(line)
                self.wfile.flush()
                if line.startswith(b"data: {"):
                    try:
                        for ch in json.loads(line[6:]).get("choices", []):
                            parts.append((ch.get("delta") or {}).get("content") or "")
                    except ValueError:
                        pass
            remember(key, convo, "".join(parts))


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    boot_check()
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    log(f"runner {ENV.get('PADDOCK_RUNNER_ID', '?')} ready on :{PORT}")
    server.serve_forever()


if __name__ == "__main__":
    main()
