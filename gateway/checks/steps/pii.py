"""Step 9, PII scan (400): card numbers (Luhn-checked), US SSNs, e-mail addresses, phone
numbers, IBANs (mod 97), provider API keys and other secrets, private keys; the patterns are
policies/pii.yaml. Per org, `mode: block` refuses the call naming the types found, `mode:
redact` replaces each value with `[REDACTED:<type>]` before the call goes out. Either way only
the types are shown and audited, never a value."""

from __future__ import annotations

from typing import Literal

from .._base import ALLOW, Allow, CallContext, Decision, Deny
from .._config import Plan, PolicyConfigError, StepSettings, StepSpec
from .._content import rewrite_texts
from .._deps import ChainDeps
from .._scan import ContentPolicies, Role

NAME = "pii"


class PiiSettings(StepSettings):
    mode: Literal["block", "redact"] = "redact"
    roles: tuple[Role, ...] = ("user", "tool")
    """Whose text is scanned. The system prompt is the operator's; the assistant's turns
    repeat what it was shown (and redacting them would rewrite its tool calls)."""
    types: tuple[str, ...] | None = None
    """The PII types looked for (pii.yaml `type`s); None: all of them."""


class PiiCheck:
    name = NAME

    def __init__(self, settings: PiiSettings, content: ContentPolicies) -> None:
        scanner = content.pii
        unknown = sorted(set(settings.types or ()) - scanner.types)
        if unknown:
            raise PolicyConfigError(
                f"steps.pii.types: unknown PII types {unknown}; known: {sorted(scanner.types)}",
                field="steps.pii.types",
            )
        self.content = content
        self.scanner = scanner
        self.mode = settings.mode
        self.roles = frozenset(settings.roles)
        self.types = frozenset(settings.types) if settings.types is not None else scanner.types

    async def check(self, ctx: CallContext) -> Decision:
        found: set[str] = set()
        for role in self.roles:
            candidates = self.content.matches(ctx, role, self.scanner)
            if candidates:
                text = ctx.role_texts[role]
                found |= self.scanner.find(text, self.types, candidates)
        if not found:
            return ALLOW
        kinds = sorted(found)
        if self.mode == "block":
            return Deny(
                NAME,
                "pii_detected",
                f"the request contains {', '.join(kinds)}; remove it and send again",
                status=400,
                data={"pii_types": kinds},
            )
        redacted: set[str] = set()

        def redact(role: str, value: str) -> str:
            if role not in self.roles:
                return value
            out, kinds_here = self.scanner.redact(value, self.types)
            redacted.update(kinds_here)
            return out

        body = rewrite_texts(ctx.endpoint, ctx.body, redact)
        return Allow(body=body, note=f"redacted: {', '.join(sorted(redacted))}")


def _build(settings: PiiSettings, _plan: Plan, deps: ChainDeps) -> PiiCheck:
    return PiiCheck(settings, deps.content)


SPEC = StepSpec(NAME, PiiSettings, _build)
