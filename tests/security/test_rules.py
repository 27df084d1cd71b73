"""Egress rules, policy limits and the wire formats the proxy reads (no network, no Docker)."""

from __future__ import annotations

import ipaddress
import ssl
import struct
from pathlib import Path

import pytest

from egress import EgressOverride, HostRule, ProviderHosts, RunnerRules, check_address, check_target
from egress._dns import build_query, nxdomain, parse_answers, parse_query
from egress._policy import load_egress_policy
from egress._tls import client_hello_sni
from paddock_core import (
    DEFAULT_POLICIES_DIR,
    InvalidRequestError,
    PermissionDeniedError,
    load_policies,
)

PUBLIC = ipaddress.ip_address("93.184.216.34")


def rules(mode: str = "allowlist", allow=(), deny=(), private=()) -> RunnerRules:
    return RunnerRules(
        mode,  # type: ignore[arg-type]
        allow=tuple(HostRule.parse(r) for r in allow),
        deny=tuple(HostRule.parse(r) for r in deny),
        private_ranges=tuple(ipaddress.ip_network(n) for n in private),
    )


PROVIDERS = ProviderHosts(
    (
        HostRule.parse("*.openai.com"),
        HostRule.parse("api.anthropic.com"),
        HostRule.parse("10.9.0.7"),
    ),
    frozenset({ipaddress.ip_address("203.0.113.9")}),
)


@pytest.mark.parametrize(
    ("text", "kind", "port"),
    [
        ("example.com", "exact", None),
        ("Example.COM.:443", "exact", 443),
        ("*.example.com", "suffix", None),
        ("*", "any", None),
        ("*:8080", "any", 8080),
        ("10.0.0.0/8", "network", None),
        ("10.1.2.3:22", "network", 22),
        ("[2001:db8::1]:443", "network", 443),
        ("2001:db8::/32", "network", None),
    ],
)
def test_rules_parse(text: str, kind: str, port: int | None) -> None:
    rule = HostRule.parse(text)
    assert (rule.kind, rule.port) == (kind, port)


@pytest.mark.parametrize(
    "text", ["", "exa*mple.com", "*example.com", "a..b", "host:0", "host:70000", "-bad.com", "ü.de"]
)
def test_bad_rules_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        HostRule.parse(text)


def test_wildcard_matches_subdomains_only() -> None:
    rule = HostRule.parse("*.example.com")
    assert rule.matches_name("a.example.com", 443)
    assert rule.matches_name("a.b.example.com", 443)
    assert not rule.matches_name("example.com", 443)
    assert not rule.matches_name("badexample.com", 443)


def test_decision_order() -> None:
    r = rules(allow=["*.example.com", "pypi.org:443"], deny=["evil.example.com"])
    assert check_target(r, PROVIDERS, "a.example.com", 80).rule == "allow *.example.com"
    assert check_target(r, PROVIDERS, "evil.example.com", 443).rule == "deny evil.example.com"
    assert check_target(r, PROVIDERS, "pypi.org", 443).allowed
    assert check_target(r, PROVIDERS, "pypi.org", 80).rule == "no_allow_rule"
    assert check_target(r, PROVIDERS, "other.org", 443).rule == "no_allow_rule"
    # An address never matches a name rule: CONNECT to an IP does not bypass the allowlist.
    assert check_target(r, PROVIDERS, "151.101.0.223", 443).rule == "no_allow_rule"
    assert check_target(r, PROVIDERS, "bad host", 443).rule == "bad_host"


def test_gateway_only_and_open_profiles() -> None:
    assert check_target(rules("gateway_only", allow=["*"]), PROVIDERS, "a.com", 443).rule == (
        "profile:gateway_only"
    )
    open_rules = rules("open_except_providers", deny=["*.bad.com"])
    assert check_target(open_rules, PROVIDERS, "anything.org", 443).allowed
    assert not check_target(open_rules, PROVIDERS, "x.bad.com", 443).allowed


@pytest.mark.parametrize("host", ["api.openai.com", "x.api.openai.com", "api.anthropic.com",
                                  "10.9.0.7", "203.0.113.9"])  # fmt: skip
def test_provider_hosts_are_denied_even_when_allowed(host: str) -> None:
    r = rules("open_except_providers", allow=["*", "api.anthropic.com", "10.0.0.0/8"])
    assert check_target(r, PROVIDERS, host, 443).rule == "provider_host"


def test_addresses_after_resolution() -> None:
    r = rules(allow=["*"], private=["172.30.5.0/24"])
    ok = ipaddress.ip_address("172.30.5.9")
    assert check_address(r, PROVIDERS, PUBLIC, 443, is_local=False) is None
    assert check_address(r, PROVIDERS, ok, 443, is_local=False) is None
    for private in ("10.0.0.1", "192.168.1.1", "169.254.169.254", "127.0.0.1", "100.64.0.1",
                    "::1", "fe80::1", "fd00::1", "224.0.0.1", "::ffff:10.0.0.1"):  # fmt: skip
        denial = check_address(r, PROVIDERS, ipaddress.ip_address(private), 443, is_local=False)
        assert denial is not None and denial.rule == "private_address", private
    # This host's own addresses are never reachable, whatever is opened.
    denial = check_address(r, PROVIDERS, ok, 443, is_local=True)
    assert denial is not None and denial.rule == "host_address"
    provider = ipaddress.ip_address("203.0.113.9")
    assert check_address(r, PROVIDERS, provider, 443, is_local=False).rule == "provider_host"  # type: ignore[union-attr]


def test_policy_profiles_and_org_limits(tmp_path: Path) -> None:
    (tmp_path / "egress.yaml").write_text(
        "egress:\n"
        "  provider_hosts: ['provider.test']\n"
        "  orgs:\n"
        "    '*': {allow: ['*.example.com', 'pypi.org'], private_ranges: ['172.30.0.0/16']}\n"
        "    open: {allow: ['*'], private_ranges: []}\n"
    )
    policies = load_policies(DEFAULT_POLICIES_DIR)
    policy = load_egress_policy(tmp_path, policies)
    assert policy.rules_for("minimal", {"allow": ["*"]}).mode == "gateway_only"
    assert policy.rules_for("no-such-profile", None).mode == "gateway_only"  # fail closed
    full = policy.rules_for("full", None)
    assert full.mode == "open_except_providers"

    ok = policy.validate_override(
        "acme",
        "standard",
        EgressOverride(allow=["a.example.com:443"], private_ranges=["172.30.5.0/24"]),
    )
    assert ok.allow == ("a.example.com:443",)
    with pytest.raises(PermissionDeniedError):
        policy.validate_override("acme", "standard", EgressOverride(allow=["github.com"]))
    with pytest.raises(PermissionDeniedError):
        policy.validate_override("acme", "standard", EgressOverride(private_ranges=["10.0.0.0/8"]))
    with pytest.raises(PermissionDeniedError):
        policy.validate_override("acme", "minimal", EgressOverride(allow=["a.example.com"]))
    assert policy.validate_override("acme", "minimal", EgressOverride(deny=["x.org"])).deny == (
        "x.org",
    )
    assert policy.validate_override("open", "standard", EgressOverride(allow=["github.com"]))
    for provider in ("provider.test", "api.openai.com"):
        with pytest.raises(InvalidRequestError):
            policy.validate_override("open", "full", EgressOverride(allow=[provider]))


def test_dns_stub_wire_format() -> None:
    qid, packet = build_query("Secret.Example.ORG", 28, qid=0x1234)
    query = parse_query(packet)
    assert query is not None
    assert (query.id, query.name, query.qtype) == (0x1234, "secret.example.org", "AAAA")
    answer = nxdomain(query)
    rid, flags, qd, an = struct.unpack_from("!HHHH", answer)
    assert (rid, qd, an) == (0x1234, 1, 0)
    assert flags & 0x8000 and flags & 0x000F == 3  # a response, NXDOMAIN
    assert parse_answers(answer, qid) == []
    assert parse_query(answer) is None  # responses are not queries
    assert parse_query(b"\x00" * 5) is None


def test_dns_answers_are_parsed() -> None:
    qid, query = build_query("a.test", 1, qid=7)
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 0, 0, 5])
    assert parse_answers(header + query[12:] + record, qid) == ["10.0.0.5"]
    assert parse_answers(header + query[12:] + record, qid + 1) is None


def _client_hello(server_name: str) -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_sni_is_read_from_a_real_client_hello() -> None:
    assert client_hello_sni(_client_hello("Files.Example.com")) == "files.example.com"
    with pytest.raises(ValueError):
        client_hello_sni(b"\x16\x03\x01\x00\x05\x01\x00")
