"""Stand-ins for the world outside a runner, each a small stdlib server in its own container.

The test creates their networks (internal: nothing on them has a route out either), labels
everything, and removes it at teardown. Each server prints one line per thing it saw, so a
test reads what reached it from the container's log.

    outside   HTTP on :8080, the host a runner may be allowed to reach
    other     HTTP on :8080, a host it must not reach
    provider  an OpenAI-compatible LLM API on :8080, registered as a provider host
    resolver  DNS on udp/5353, the proxy's upstream; it answers for the names below
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import docker
import docker.errors
from docker.models.containers import Container

from tests.conftest import PROBE_IMAGE

LABEL = "io.paddock.test-standin"

HTTP_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
NAME = sys.argv[1]
class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        host = self.headers.get("Host")
        print(f"REQUEST {self.client_address[0]} GET {self.path} {host}", flush=True)
        body = f"stand-in {NAME}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = ThreadingHTTPServer(("0.0.0.0", 8080), H)
print("READY", flush=True)
server.serve_forever()
"""

PROVIDER = r"""
import json, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
def sse(obj):
    return b"data: " + json.dumps(obj).encode() + b"\n\n"
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def send(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        print(f"REQUEST {self.client_address[0]} GET {self.path}", flush=True)
        models = {"object": "list", "data": [{"id": "fake-gpt", "object": "model"}]}
        self.send(200, json.dumps(models).encode())
    def do_POST(self):
        print(f"REQUEST {self.client_address[0]} POST {self.path}", flush=True)
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        users = [m for m in req.get("messages", []) if m.get("role") == "user"]
        text = "stand-in provider: " + str(users[-1].get("content", "") if users else "")[:200]
        base = {"id": "chatcmpl-standin", "created": int(time.time()),
                "model": req.get("model", "fake-gpt")}
        if not req.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": "stop"}
            out = {**base, "object": "chat.completion", "usage": USAGE, "choices": [choice]}
            return self.send(200, json.dumps(out).encode())
        chunk = {**base, "object": "chat.completion.chunk"}
        out = sse({**chunk, "choices": [{"index": 0, "finish_reason": None,
                                         "delta": {"role": "assistant", "content": text}}]})
        out += sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        out += sse({**chunk, "choices": [], "usage": USAGE})
        self.send(200, out + b"data: [DONE]\n\n", "text/event-stream")
server = ThreadingHTTPServer(("0.0.0.0", 8080), H)
print("READY", flush=True)
server.serve_forever()
"""

RESOLVER = r"""
import json, socket, struct, sys
TABLE = json.loads(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 5353))
print("READY", flush=True)
while True:
    data, addr = sock.recvfrom(4096)
    if len(data) < 12:
        continue
    qid = struct.unpack_from("!H", data)[0]
    pos, labels = 12, []
    while pos < len(data) and data[pos]:
        labels.append(data[pos + 1 : pos + 1 + data[pos]].decode("ascii", "replace"))
        pos += 1 + data[pos]
    qtype = struct.unpack_from("!H", data, pos + 1)[0]
    name = ".".join(labels).lower()
    print(f"QUERY {addr[0]} {name} {qtype}", flush=True)
    ip = TABLE.get(name)
    answer = b""
    if ip and qtype == 1:
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(ip)
    header = struct.pack("!HHHHHH", qid, 0x8180 | (0 if ip else 3), 1, 1 if answer else 0, 0, 0)
    sock.sendto(header + data[12 : pos + 5] + answer, addr)
"""


@dataclass
class StandIn:
    name: str
    container: Container
    address: str
    network: str

    def log(self) -> list[str]:
        self.container.reload()
        return self.container.logs().decode(errors="replace").splitlines()

    def requests_from(self, address: str) -> list[str]:
        return [ln for ln in self.log() if ln.startswith(("REQUEST ", "QUERY ")) and
                ln.split()[1] == address]  # fmt: skip

    def queries_for(self, name: str) -> list[str]:
        return [ln for ln in self.log() if ln.startswith("QUERY ") and ln.split()[2] == name]


@dataclass
class StandIns:
    client: docker.DockerClient
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    hosts: dict[str, StandIn] = field(default_factory=dict)
    subnets: dict[str, str] = field(default_factory=dict)

    def network(self, role: str) -> str:
        name = f"paddock-test-{role}-{self.tag}"
        net = self.client.networks.create(
            name, driver="bridge", internal=True, labels={LABEL: self.tag}
        )
        net.reload()
        self.subnets[role] = net.attrs["IPAM"]["Config"][0]["Subnet"]
        return name

    def start(self, name: str, network: str, script: str, *args: str) -> StandIn:
        container = self.client.containers.run(
            PROBE_IMAGE,
            entrypoint=["/usr/bin/python3", "-c", script, *args],
            name=f"paddock-test-{name}-{self.tag}",
            labels={LABEL: self.tag},
            network=network,
            user="10001:10001",
            cap_drop=["ALL"],
            detach=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            container.reload()
            if "READY" in container.logs().decode(errors="replace"):
                break
            if container.status == "exited":
                raise RuntimeError(f"stand-in {name} died: {container.logs().decode()[-500:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"stand-in {name} did not start")
        address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        host = StandIn(name, container, address, network)
        self.hosts[name] = host
        return host

    def remove(self) -> None:
        filters = {"label": f"{LABEL}={self.tag}"}
        for container in self.client.containers.list(all=True, filters=filters):
            container.remove(force=True)
        for network in self.client.networks.list(filters=filters):
            network.remove()


@contextmanager
def stand_ins(client: docker.DockerClient) -> Iterator[StandIns]:
    """outside, other and resolver on one test network; provider on its own."""
    world = StandIns(client)
    try:
        out_net = world.network("outside")
        llm_net = world.network("llm")
        world.start("outside", out_net, HTTP_SERVER, "outside")
        world.start("other", out_net, HTTP_SERVER, "other")
        world.start("provider", llm_net, PROVIDER)
        table = {
            "outside.test": world.hosts["outside"].address,
            "other.test": world.hosts["other"].address,
            "secret.test": world.hosts["other"].address,
            "provider.test": world.hosts["provider"].address,
        }
        world.start("resolver", out_net, RESOLVER, json.dumps(table))
        yield world
    finally:
        try:
            world.remove()
        except docker.errors.DockerException as exc:
            print(f"stand-ins {world.tag} left behind: {exc}")
