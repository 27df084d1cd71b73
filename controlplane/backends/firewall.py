"""The host firewall around runner networks (iptables; the Docker backend needs it).

Runner bridges are named `pdk<plane><runner>` (15 characters), so one interface pattern finds
every runner of this control plane (`pdk<plane>+`) and every runner at all (`pdk+`):

    filter INPUT        -i pdk+ → PADDOCK-INPUT
      PADDOCK-INPUT       -i pdk<plane>+ → PADDOCK-<plane>-IN   (one jump per control plane)
                          → PADDOCK-REJECT                        (runners of no known plane)
      PADDOCK-<plane>-IN  established → ACCEPT
                          to the runner pool, tcp <gateway port>, <proxy port> → ACCEPT
                          to the runner pool, udp <DNS stub port> → ACCEPT
                          NFLOG "paddock:in" (rate-limited per source) → PADDOCK-REJECT
    filter DOCKER-USER  -i pdk+, -o pdk+ → PADDOCK-FORWARD (nothing is ever routed for a runner)
      PADDOCK-FORWARD     -i pdk<plane>+ → PADDOCK-<plane>-FWD (NFLOG "paddock:fwd", reject)
                          → PADDOCK-REJECT
    nat PREROUTING      -i pdk<plane>+ udp/53 → REDIRECT to the DNS stub port
    ip6tables           INPUT and FORWARD: -i pdk+ (and -o pdk+) → DROP

So a runner reaches exactly the gateway and the egress proxy (and its DNS stub) on its bridge
address; every other port of the host, on any of its addresses, and every other network is
refused, and the refusal is logged for the audit. Everything fails closed: a runner bridge of a
plane whose rules are gone falls through to the catch-all reject.

`install()` and `remove()` are idempotent and safe to run concurrently from several control
planes: shared chains are created once and never flushed; a plane's own chains are rebuilt
only when they differ from what is wanted.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from paddock_core import BackendError

__all__ = ["BRIDGE_PREFIX", "HostFirewall", "plane_tag"]

logger = logging.getLogger(__name__)

BRIDGE_PREFIX = "pdk"
_REJECT = "PADDOCK-REJECT"
_INPUT = "PADDOCK-INPUT"
_FORWARD = "PADDOCK-FORWARD"
NFLOG_PREFIX_INPUT = "paddock:in"
NFLOG_PREFIX_FORWARD = "paddock:fwd"


def plane_tag(controlplane_id: str) -> str:
    """5 hex characters naming one control plane in bridge and chain names."""
    return hashlib.sha256(controlplane_id.encode()).hexdigest()[:5]


@dataclass(frozen=True)
class HostFirewall:
    controlplane_id: str
    runner_pool: str
    """CIDR of every runner network (the bridge addresses are in it)."""
    tcp_ports: tuple[int, ...]
    """Host ports runners may reach on their bridge address (gateway, egress proxy)."""
    dns_port: int
    """Where runners' DNS (udp/53 to the bridge address) is redirected: the egress DNS stub."""
    nflog_group: int | None = None

    @property
    def tag(self) -> str:
        return plane_tag(self.controlplane_id)

    @property
    def bridge_pattern(self) -> str:
        return f"{BRIDGE_PREFIX}{self.tag}+"

    def bridge_name(self, runner_id: str) -> str:
        return f"{BRIDGE_PREFIX}{self.tag}{hashlib.sha256(runner_id.encode()).hexdigest()[:7]}"

    # --- the rules ------------------------------------------------------------------------

    def _plane_input(self) -> list[list[str]]:
        pool = self.runner_pool
        rules = ["-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT".split()]
        rules += [f"-d {pool} -p tcp -m tcp --dport {p} -j ACCEPT".split() for p in self.tcp_ports]
        rules.append(f"-d {pool} -p udp -m udp --dport {self.dns_port} -j ACCEPT".split())
        return rules + self._log(NFLOG_PREFIX_INPUT, "i") + [["-j", _REJECT]]

    def _plane_forward(self) -> list[list[str]]:
        return self._log(NFLOG_PREFIX_FORWARD, "f") + [["-j", _REJECT]]

    def _log(self, prefix: str, kind: str) -> list[list[str]]:
        if self.nflog_group is None:
            return []
        rate = "-m hashlimit --hashlimit-upto 20/sec --hashlimit-burst 40 --hashlimit-mode srcip"
        name = f"--hashlimit-name pdk{self.tag}{kind}"
        group = f"--nflog-group {self.nflog_group} --nflog-prefix {prefix}"
        return [f"{rate} {name} -j NFLOG {group}".split()]

    def _plane_nat(self) -> list[list[str]]:
        return [f"-p udp -m udp --dport 53 -j REDIRECT --to-ports {self.dns_port}".split()]

    # --- install / remove -----------------------------------------------------------------

    def install(self) -> None:
        """Put the rules in place (idempotent). BackendError when iptables is unusable."""
        ipt = _Iptables("iptables")
        rejects = [
            "-p tcp -j REJECT --reject-with tcp-reset",
            "-j REJECT --reject-with icmp-admin-prohibited",
        ]
        ipt.ensure_chain("filter", _REJECT, [r.split() for r in rejects])
        ipt.ensure_chain("filter", _INPUT, [["-j", _REJECT]])
        ipt.ensure_chain("filter", _FORWARD, [["-j", _REJECT]])
        any_bridge = f"{BRIDGE_PREFIX}+"
        ipt.ensure_jump("filter", "INPUT", ["-i", any_bridge, "-j", _INPUT])
        forward_hook = "DOCKER-USER" if ipt.has_chain("filter", "DOCKER-USER") else "FORWARD"
        ipt.ensure_jump("filter", forward_hook, ["-i", any_bridge, "-j", _FORWARD])
        ipt.ensure_jump("filter", forward_hook, ["-o", any_bridge, "-j", _FORWARD])

        own_in, own_fwd, own_nat = (f"PADDOCK-{self.tag}-{k}" for k in ("IN", "FWD", "DNS"))
        ipt.sync_chain("filter", own_in, self._plane_input())
        ipt.sync_chain("filter", own_fwd, self._plane_forward())
        ipt.sync_chain("nat", own_nat, self._plane_nat())
        ipt.ensure_jump("filter", _INPUT, ["-i", self.bridge_pattern, "-j", own_in])
        ipt.ensure_jump("filter", _FORWARD, ["-i", self.bridge_pattern, "-j", own_fwd])
        ipt.ensure_jump("nat", "PREROUTING", ["-i", self.bridge_pattern, "-j", own_nat])

        ip6 = _Iptables("ip6tables", required=False)
        if ip6.usable:
            ip6.ensure_jump("filter", "INPUT", ["-i", any_bridge, "-j", "DROP"])
            ip6.ensure_jump("filter", "FORWARD", ["-i", any_bridge, "-j", "DROP"])
            ip6.ensure_jump("filter", "FORWARD", ["-o", any_bridge, "-j", "DROP"])
        logger.info(
            "host firewall for runners on %s installed (plane %s: tcp %s, dns udp/%d)",
            self.bridge_pattern,
            self.tag,
            ",".join(map(str, self.tcp_ports)),
            self.dns_port,
        )

    @classmethod
    def remove_plane(cls, controlplane_id: str) -> None:
        """Remove the rules of one control plane, knowing only its id (cleanup, tests)."""
        cls(controlplane_id, "0.0.0.0/32", (), 0).remove()

    def remove(self, *, shared: bool = False) -> None:
        """Remove this plane's rules (idempotent); with `shared`, the catch-alls too.

        Removing the shared rules opens the host to runner bridges of every plane: do it only
        when no runner network is left on this host.
        """
        ipt = _Iptables("iptables")
        own_in, own_fwd, own_nat = (f"PADDOCK-{self.tag}-{k}" for k in ("IN", "FWD", "DNS"))
        ipt.delete_rule("filter", _INPUT, ["-i", self.bridge_pattern, "-j", own_in])
        ipt.delete_rule("filter", _FORWARD, ["-i", self.bridge_pattern, "-j", own_fwd])
        ipt.delete_rule("nat", "PREROUTING", ["-i", self.bridge_pattern, "-j", own_nat])
        for table, chain in (("filter", own_in), ("filter", own_fwd), ("nat", own_nat)):
            ipt.drop_chain(table, chain)
        if not shared:
            return
        any_bridge = f"{BRIDGE_PREFIX}+"
        ipt.delete_rule("filter", "INPUT", ["-i", any_bridge, "-j", _INPUT])
        for hook in ("DOCKER-USER", "FORWARD"):
            ipt.delete_rule("filter", hook, ["-i", any_bridge, "-j", _FORWARD])
            ipt.delete_rule("filter", hook, ["-o", any_bridge, "-j", _FORWARD])
        for chain in (_INPUT, _FORWARD, _REJECT):
            ipt.drop_chain("filter", chain)
        ip6 = _Iptables("ip6tables", required=False)
        if ip6.usable:
            ip6.delete_rule("filter", "INPUT", ["-i", any_bridge, "-j", "DROP"])
            ip6.delete_rule("filter", "FORWARD", ["-i", any_bridge, "-j", "DROP"])
            ip6.delete_rule("filter", "FORWARD", ["-o", any_bridge, "-j", "DROP"])


class _Iptables:
    """iptables(8) called as a program: the one place this module touches the host."""

    def __init__(self, program: str, *, required: bool = True) -> None:
        self._path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
        self.usable = self._path is not None
        if required and not self.usable:
            raise BackendError(f"{program} is required for the runner firewall", reason="firewall")

    def _run(self, table: str, args: Sequence[str], *, check: bool = True) -> str | None:
        assert self._path is not None
        proc = subprocess.run(
            [self._path, "-w", "5", "-t", table, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode == 0:
            return proc.stdout
        if check:
            raise BackendError(
                f"{self._path} -t {table} {' '.join(args)}: {proc.stderr.strip()}",
                reason="firewall",
            )
        return None

    def has_chain(self, table: str, chain: str) -> bool:
        return self._run(table, ["-S", chain], check=False) is not None

    def rules(self, table: str, chain: str) -> list[str]:
        out = self._run(table, ["-S", chain], check=False) or ""
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def ensure_chain(self, table: str, chain: str, rules: list[list[str]]) -> None:
        """Create `chain` with `rules` if it does not exist; an existing one is left alone."""
        if self.has_chain(table, chain):
            return
        if self._run(table, ["-N", chain], check=False) is None and not self.has_chain(
            table, chain
        ):
            raise BackendError(f"cannot create chain {chain}", reason="firewall")
        if not self.rules(table, chain):  # another plane may have filled it meanwhile
            for rule in rules:
                self._run(table, ["-A", chain, *rule])

    def sync_chain(self, table: str, chain: str, rules: list[list[str]]) -> None:
        """Make `chain` hold exactly `rules` (rebuilt only when it differs)."""
        if not self.has_chain(table, chain):
            self._run(table, ["-N", chain], check=False)
        current = self.rules(table, chain)
        if len(current) == len(rules) and all(
            self._run(table, ["-C", chain, *rule], check=False) is not None for rule in rules
        ):
            return
        self._run(table, ["-F", chain])
        for rule in rules:
            self._run(table, ["-A", chain, *rule])

    def ensure_jump(self, table: str, chain: str, rule: list[str]) -> None:
        """`rule` first in `chain` unless it is there already."""
        if self._run(table, ["-C", chain, *rule], check=False) is None:
            self._run(table, ["-I", chain, "1", *rule])

    def delete_rule(self, table: str, chain: str, rule: list[str]) -> None:
        while self._run(table, ["-C", chain, *rule], check=False) is not None:
            self._run(table, ["-D", chain, *rule])

    def drop_chain(self, table: str, chain: str) -> None:
        if self.has_chain(table, chain):
            self._run(table, ["-F", chain], check=False)
            self._run(table, ["-X", chain], check=False)
