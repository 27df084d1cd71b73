"""Paddock's egress proxy: the only way out of a runner, and the record of every attempt.

`EgressServer(settings)` runs the HTTP proxy (CONNECT and plain forwarding), the DNS stub that
answers runners, and the listener of the host firewall's refusals. `EgressPolicy` (loaded with
`load_egress_policy`) turns a runner's profile and overrides into its rules; the control plane
uses it to check overrides, the proxy to decide.
"""

from ._dns import DnsQuery, DnsStub, SystemResolver, UpstreamResolver
from ._nflog import BlockedPacket, NflogListener
from ._policy import EgressOverride, EgressPolicy, OrgLimits, load_egress_policy
from ._rules import Decision, HostRule, ProviderHosts, RunnerRules, check_address, check_target
from ._server import FIREWALL_PREFIXES, EgressServer, make_resolver
from ._settings import EgressSettings

__all__ = [
    "FIREWALL_PREFIXES",
    "BlockedPacket",
    "Decision",
    "DnsQuery",
    "DnsStub",
    "EgressOverride",
    "EgressPolicy",
    "EgressServer",
    "EgressSettings",
    "HostRule",
    "NflogListener",
    "OrgLimits",
    "ProviderHosts",
    "RunnerRules",
    "SystemResolver",
    "UpstreamResolver",
    "check_address",
    "check_target",
    "load_egress_policy",
    "make_resolver",
]
