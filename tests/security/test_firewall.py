"""The host firewall's rules: installed and removed idempotently, one plane beside another.

Touches only chains of planes it makes up, and never the shared catch-alls (other control
planes on this host may rely on them while this runs).
"""

from __future__ import annotations

import secrets
import subprocess

import pytest

from controlplane.backends.firewall import HostFirewall

pytestmark = pytest.mark.docker  # root and iptables, like the Docker backend


def _rules(table: str = "filter") -> list[str]:
    out = subprocess.run(["iptables", "-w", "5", "-t", table, "-S"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.splitlines()


def _plane(tag: str, table: str = "filter") -> list[str]:
    return [line for line in _rules(table) if tag in line]


def test_install_is_idempotent_and_planes_coexist() -> None:
    a = HostFirewall(
        f"fwtest-{secrets.token_hex(4)}", "172.31.0.0/16", (41001, 41004), 41053, 60001
    )
    b = HostFirewall(f"fwtest-{secrets.token_hex(4)}", "172.31.0.0/16", (42001,), 42053)
    try:
        a.install()
        first = _plane(a.tag) + _plane(a.tag, "nat")
        a.install()
        b.install()
        assert _plane(a.tag) + _plane(a.tag, "nat") == first  # nothing duplicated
        assert any("--dport 41004" in line for line in first)
        assert any("--nflog-group 60001" in line for line in first)
        assert any("--to-ports 41053" in line for line in first)
        assert not any("NFLOG" in line for line in _plane(b.tag))  # no group: no logging

        # Runners of any plane fall through to the reject after their plane's rules.
        paddock_input = [line for line in _rules() if line.startswith("-A PADDOCK-INPUT")]
        assert paddock_input[-1] == "-A PADDOCK-INPUT -j PADDOCK-REJECT"
        assert "-A INPUT -i pdk+ -j PADDOCK-INPUT" in _rules()

        # A plane's ports change: its chain is rebuilt, not appended to.
        HostFirewall(a.controlplane_id, "172.31.0.0/16", (41002,), 41053, 60001).install()
        assert not any("--dport 41001" in line for line in _plane(a.tag))
        assert any("--dport 41002" in line for line in _plane(a.tag))

        a.remove()
        a.remove()
        assert _plane(a.tag) == [] and _plane(a.tag, "nat") == []
        assert _plane(b.tag), "removing one plane leaves the other"
    finally:
        a.remove()
        b.remove()
    assert _plane(b.tag) == []
