#!/usr/bin/env python3
"""Paddock probe runner (stdlib only): a tiny stand-in for OpenClaw with the same runner contract.
Boot: GET ${PADDOCK_GATEWAY_URL}/models must answer 200 within ~10 s, else exit 3 (2: missing env).
Serves :18789 GET /healthz /readyz /v1/models, POST /v1/chat/completions (forwarded to the gateway
with model ${PADDOCK_MODEL}). Test hook: a last user message "!probe {json}" runs that action here.
Warm pool: with PADDOCK_AWAIT_CLAIM=1 it starts holding no secret and waits for
POST /paddock/claim {"env": {...}} with its claim secret (x-paddock-claim), then checks the
gateway and serves.
"""

import base64
import contextlib
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
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 18789
MAX_BODY = 8 * 1024 * 1024
OUT_CAP = 64 * 1024
REQUIRED = "PADDOCK_GATEWAY_URL PADDOCK_RUNNER_TOKEN PADDOCK_MODEL OPENCLAW_GATEWAY_TOKEN".split()
ENV = os.environ
GW = ENV.get("PADDOCK_GATEWAY_URL", "").rstrip("/")
MODEL = ENV.get("PADDOCK_MODEL", "")
# Never use proxies from the environment: the runner talks to the gateway only.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SESSIONS = {}  # session key -> prior messages (bounded)
SESSIONS_LOCK = threading.Lock()
MAX_SESSIONS = 256
POOL = ThreadPoolExecutor(max_workers=8)  # for probes that need a bounded wait


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
    failure = gateway_check(budget)
    if failure:
        log(failure)
        sys.exit(3)


def gateway_check(budget=10.0):
    """None when the gateway answers GET /models with 200 for our token, else why not."""
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
    return f"gateway check failed: GET {GW}/models -> {last}"


AWAIT_CLAIM = ENV.get("PADDOCK_AWAIT_CLAIM") == "1"
CLAIM = {"state": "pooled" if AWAIT_CLAIM else "claimed"}  # pooled -> claiming -> claimed
CLAIM_LOCK = threading.Lock()


def claim_allowed(source, presented):
    """A claim presents the secret this pooled runner was started with (any source: an E2B
    VM's requests come through E2B); without one, only the gateway address may claim."""
    secret = ENV.get("PADDOCK_CLAIM_SECRET", "")
    if secret:
        return hmac.compare_digest(presented.encode(), secret.encode())
    return source == urllib.parse.urlsplit(GW).hostname


def claim(source, body, presented=""):
    """Take the secrets and settings a claim hands over; (status, JSON answer)."""
    global GW, MODEL
    if not claim_allowed(source, presented):
        return 403, {"error": {"message": "a claim needs this runner's claim secret"}}
    env = body.get("env") if isinstance(body, dict) else None
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        return 400, {"error": {"message": "expected {\"env\": {NAME: string}}"}}
    if env.get("PADDOCK_RUNNER_ID", ENV.get("PADDOCK_RUNNER_ID")) != ENV.get("PADDOCK_RUNNER_ID"):
        return 409, {"error": {"message": "this claim is for another runner"}}
    with CLAIM_LOCK:
        if CLAIM["state"] != "pooled":
            return 409, {"error": {"message": f"already {CLAIM['state']}"}}
        CLAIM["state"] = "claiming"
    ENV.update(env)
    GW, MODEL = ENV.get("PADDOCK_GATEWAY_URL", "").rstrip("/"), ENV.get("PADDOCK_MODEL", "")
    missing = [n for n in REQUIRED if not ENV.get(n)]
    failure = f"missing required env: {', '.join(missing)}" if missing else gateway_check()
    if failure:
        log(failure)
        threading.Timer(0.2, os._exit, (3,)).start()  # answer first, then die as a boot would
        return 502, {"error": {"message": failure}}
    CLAIM["state"] = "claimed"
    log(f"claimed as runner {ENV.get('PADDOCK_RUNNER_ID', '?')}")
    return 200, {"ok": True, "status": "ready"}


def text_of(content):
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "".join(str(p.get("text", "")) for p in parts)
    return content if isinstance(content, str) else ""


def _fail(msg):
    return {"ok": False, "error": msg}


def _err(e):
    return _fail(f"{type(e).__name__}: {e}".rstrip(": "))


def run_probe(spec):
    """Run one confinement probe; always returns a JSON-able dict with "ok"."""
    op = spec.get("op")
    timeout = float(spec.get("timeout", 3))
    try:
        if op == "http":
            req = urllib.request.Request(spec["url"], method=str(spec.get("method", "GET")).upper(),
                                         headers=dict(spec.get("headers") or {}))
            try:
                with OPENER.open(req, timeout=timeout) as r:
                    return {"ok": True, "status": r.status}
            except urllib.error.HTTPError as e:  # a response arrived: the path is open
                return {"ok": True, "status": e.code}
        if op == "tcp":
            with socket.create_connection((spec["host"], int(spec["port"])), timeout=timeout):
                return {"ok": True}
        if op == "resolve":  # getaddrinfo has no timeout of its own: bound it via a thread
            infos = POOL.submit(socket.getaddrinfo, spec["name"], None).result(timeout=timeout)
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
        if op == "proxy":
            return run_proxy(spec, timeout)
        return _fail(f"unknown op {op!r}")
    except Exception as e:  # noqa: BLE001
        return _err(e)


def _head(sock):
    data = b""
    while b"\r\n\r\n" not in data and len(data) < OUT_CAP:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines[0].startswith("HTTP/") else 0
    return status, dict(ln.split(": ", 1) for ln in lines[1:] if ": " in ln), rest


def run_proxy(spec, timeout):
    """GET http://host:port/path through $HTTP_PROXY: plain forwarding, or a CONNECT tunnel
    ("connect": true). "proxy" replaces $HTTP_PROXY; "credentials" ("id:token", "": none), its
    credentials."""
    proxy = urllib.parse.urlsplit(spec.get("proxy") or ENV.get("HTTP_PROXY", ""))
    if not proxy.hostname:
        return _fail("no HTTP_PROXY")
    creds = spec.get("credentials")
    if creds is None:
        unq = urllib.parse.unquote
        creds = f"{unq(proxy.username or '')}:{unq(proxy.password or '')}"
    basic = base64.b64encode(creds.encode()).decode()
    auth = f"Proxy-Authorization: Basic {basic}\r\n" if creds else ""
    host, port, path = spec["host"], int(spec["port"]), spec.get("path", "/")
    get = f"GET {{}} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    with socket.create_connection((proxy.hostname, proxy.port or 80), timeout=timeout) as s:
        if spec.get("connect"):
            target = f"{host}:{port}"
            s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
            status, headers, _ = _head(s)
            if status != 200:
                rule = headers.get("X-Paddock-Egress-Rule")
                return {"ok": False, "proxy_status": status, "rule": rule}
            s.sendall((get.format(path) + "\r\n").encode())
        else:
            s.sendall((get.format(f"http://{host}:{port}{path}") + auth + "\r\n").encode())
        status, headers, body = _head(s)
        while len(body) < OUT_CAP and (chunk := s.recv(4096)):
            body += chunk
    rule = headers.get("X-Paddock-Egress-Rule")
    return {"ok": 200 <= status < 400, "status": status, "rule": rule,
            "body": body[:OUT_CAP].decode("utf-8", "replace")}


def run_exec(spec, timeout):
    argv = spec.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return _fail("argv must be a non-empty list of strings")
    mode = ENV.get("PADDOCK_EXEC_MODE", "deny")
    if mode == "allowlist":
        allowed = {a.strip() for a in ENV.get("PADDOCK_EXEC_ALLOWLIST", "").split(",") if a.strip()}
        if argv[0] not in allowed:
            return _fail(f"exec refused: {argv[0]!r} not in allowlist")
    elif mode != "full":
        return _fail(f"exec refused: PADDOCK_EXEC_MODE={mode}")
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

    def send_raw(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, code, obj):
        self.send_raw(code, json.dumps(obj).encode())

    def error(self, code, message, kind="invalid_request_error"):  # OpenAI-style error body
        self.send_json(code, {"error": {"message": message, "type": kind}})

    def authorized(self):
        token = ENV.get("OPENCLAW_GATEWAY_TOKEN", "")
        want = f"Bearer {token}".encode()
        got = self.headers.get("Authorization", "").encode()
        if token and CLAIM["state"] == "claimed" and hmac.compare_digest(got, want):
            return True
        self.error(401, "unauthorized", "unauthorized")
        return False

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/health"):
            return self.send_json(200, {"ok": True, "status": "live"})
        if path in ("/readyz", "/ready"):  # pooled: ready to be claimed
            if CLAIM["state"] == "claiming":
                return self.send_json(503, {"ok": False, "status": "claiming"})
            status = "pooled" if CLAIM["state"] == "pooled" else "ready"
            return self.send_json(200, {"ok": True, "status": status})
        if path == "/v1/models" and self.authorized():
            return self.send_json(200, {"object": "list", "data": [
                {"id": "openclaw/default", "object": "model", "owned_by": "paddock-probe"}]})
        if path != "/v1/models":
            self.error(404, "not found", "not_found")

    do_HEAD = do_GET

    def do_POST(self):
        if self.path.split("?", 1)[0] == "/paddock/claim":
            n = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(n)) if 0 < n <= MAX_BODY else None
            except ValueError:
                body = None
            presented = self.headers.get("x-paddock-claim") or ""
            return self.send_json(*claim(self.client_address[0], body, presented))
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
            assert isinstance(messages, list) and messages
            assert all(isinstance(m, dict) for m in messages)
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
                result = run_probe(spec) if isinstance(spec, dict) else _fail("not an object")
            except ValueError as e:
                result = _fail(f"bad probe JSON: {e}")
            reply = json.dumps(result)
            remember(key, convo, reply)
            return self.local_reply(reply, stream, body.get("model") or "openclaw/default")
        self.forward(convo, stream, key)

    def local_reply(self, content, stream, model):
        cid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        if not stream:
            msg = {"role": "assistant", "content": content}
            return self.send_json(200, {"id": cid, "object": "chat.completion", "created": now,
                                        "model": model, "usage": usage, "choices": [
                                            {"index": 0, "finish_reason": "stop", "message": msg}]})
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
            ctype = e.headers.get("Content-Type", "application/json")
            return self.send_raw(e.code, e.read(), ctype)
        except Exception as e:  # noqa: BLE001
            return self.error(502, f"gateway unreachable: {_err(e)['error']}", "upstream_error")
        with upstream:
            if not stream:
                data = upstream.read()
                self.send_raw(upstream.status, data)
                with contextlib.suppress(Exception):
                    remember(key, convo, json.loads(data)["choices"][0]["message"]["content"] or "")
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
    if AWAIT_CLAIM:
        log("pooled: waiting for a claim (no secrets yet)")
    else:
        boot_check()
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    log(f"runner {ENV.get('PADDOCK_RUNNER_ID', '?')} ready on :{PORT}")
    server.serve_forever()


if __name__ == "__main__":
    main()
