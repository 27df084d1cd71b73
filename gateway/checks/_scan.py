"""Content scanning for steps 9 to 11: named patterns from policies/pii.yaml and
policies/content_rules.yaml, validated and compiled once when the gateway starts.

Why RE2 (google-re2) and not `re`: an `re2.Set` tells in ONE linear pass which of all the
patterns match anywhere in a text (about 25 µs per 10 KB on the bench machine, where Python's
`re` took about 300 µs per pattern, a dozen times over), and patterns are policy data, so no
pattern can backtrack exponentially on a hostile input (RE2 has no look-around and no
back-references, by design). Only a text where the set reports a match is searched again,
pattern by pattern, for positions (redaction) and validators (Luhn, IBAN mod 97).

Texts of several messages are scanned joined by `_SEP` (a NUL between newlines), which no
shipped pattern crosses, so a match never spans two messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import re2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._config import PolicyConfigError
from ._text import joined, normalized

if TYPE_CHECKING:
    from ._base import CallContext

__all__ = [
    "ContentPolicies",
    "PatternSet",
    "PiiScanner",
    "Role",
    "RuleHits",
    "RuleScanner",
    "joined",
]

Role = Literal["system", "user", "assistant", "tool"]

# --- validators (a match counts only when its validator agrees) ---------------------------------


def _luhn(match: str) -> bool:
    digits = [int(c) for c in match if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_mod97(match: str) -> bool:
    compact = match.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _us_ssn(match: str) -> bool:
    area, group, serial = match.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


VALIDATORS: Mapping[str, Callable[[str], bool]] = {
    "luhn": _luhn,
    "iban_mod97": _iban_mod97,
    "us_ssn": _us_ssn,
}


# --- compiled pattern sets ----------------------------------------------------------------------


class PatternSet:
    """Patterns compiled into one RE2 set (which match?) and one regex each (where?)."""

    def __init__(
        self, patterns: Sequence[tuple[str, str]], *, case_sensitive: bool, where: str
    ) -> None:
        """`patterns`: (id, RE2 pattern); `where` names the file in errors."""
        self.patterns = [pattern for _, pattern in patterns]
        self.case_sensitive = case_sensitive
        options = re2.Options()
        options.case_sensitive = case_sensitive
        options.never_capture = True
        options.log_errors = False  # a bad pattern is reported below, naming its file and rule
        self._set: Any = re2.Set.SearchSet(options)
        self._each: list[Any] = []
        for rule_id, pattern in patterns:
            try:
                compiled = re2.compile(pattern, options)
                self._set.Add(pattern)
            except re2.error as exc:
                reason = exc.args[0] if exc.args else exc
                if isinstance(reason, bytes):
                    reason = reason.decode(errors="replace")
                raise PolicyConfigError(f"{where}: {rule_id}: invalid pattern: {reason}") from exc
            if compiled.search("") is not None:  # it would match every text there is
                raise PolicyConfigError(f"{where}: {rule_id}: pattern matches the empty string")
            self._each.append(compiled)
        if patterns:
            self._set.Compile()
        else:
            self._set = None

    def matching(self, text: str) -> list[int]:
        """Indexes of the patterns that match somewhere in `text` (unordered)."""
        if self._set is None or not text:
            return []
        found: list[int] | None = self._set.Match(text.encode())  # None: no match
        return found or []

    def spans(self, index: int, text: str) -> Iterator[tuple[int, int]]:
        for match in self._each[index].finditer(text):
            start, end = match.span()
            yield start, end


# --- policy files -------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PiiPattern(_Frozen):
    type: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    pattern: str = Field(min_length=1)
    validator: Literal["luhn", "iban_mod97", "us_ssn"] | None = None


class _PiiFile(_Frozen):
    patterns: dict[str, _PiiPattern]


class _Rule(_Frozen):
    id: str = Field(pattern=r"^[a-z][a-z0-9_.]*$")
    scanner: Literal["safety", "security"]
    category: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    weight: float = Field(gt=0, le=10)
    pattern: str = Field(min_length=1)


class _RulesFile(_Frozen):
    rules: list[_Rule]


def _load(path: Path, model: type[BaseModel]) -> Any:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyConfigError(f"cannot read policy file {path}: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PolicyConfigError(f"{path}: {where}: {first['msg']}") from exc


# --- scanners -----------------------------------------------------------------------------------


class PiiScanner:
    """Finds PII types in texts and replaces their values with `[REDACTED:<type>]`."""

    def __init__(self, patterns: Mapping[str, _PiiPattern], *, where: str) -> None:
        self._ids = list(patterns)
        self._types = [p.type or pid for pid, p in patterns.items()]
        self._validators = [
            VALIDATORS[p.validator] if p.validator else None for p in patterns.values()
        ]
        self._set = PatternSet(
            [(pid, p.pattern) for pid, p in patterns.items()], case_sensitive=True, where=where
        )

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._types)

    @property
    def patterns(self) -> PatternSet:
        return self._set

    def _found(self, index: int, text: str) -> Iterator[tuple[int, int]]:
        check = self._validators[index]
        for start, end in self._set.spans(index, text):
            if check is None or check(text[start:end]):
                yield start, end

    def find(
        self, text: str, wanted: frozenset[str], candidates: Iterable[int] | None = None
    ) -> set[str]:
        """The wanted types present in `text`. `candidates`: the pattern indexes a set scan of
        `text` already reported (`ContentPolicies.matches`), so it is not scanned again."""
        out: set[str] = set()
        for index in self._set.matching(text) if candidates is None else candidates:
            kind = self._types[index]
            if kind in wanted and kind not in out and next(self._found(index, text), None):
                out.add(kind)
        return out

    def redact(self, text: str, wanted: frozenset[str]) -> tuple[str, set[str]]:
        """`text` with each wanted PII value replaced, and the types replaced."""
        folded = normalized(text)
        hits = sorted(i for i in self._set.matching(folded) if self._types[i] in wanted)
        if not hits:
            return text, set()
        text = folded  # a text with PII goes on folded (NFKC), as it was scanned
        done: set[str] = set()
        for index in hits:  # file order: earlier patterns win where two overlap
            spans = list(self._found(index, text))
            if not spans:
                continue
            kind = self._types[index]
            done.add(kind)
            for start, end in reversed(spans):
                text = f"{text[:start]}[REDACTED:{kind}]{text[end:]}"
        return text, done


@dataclass(frozen=True)
class RuleHits:
    score: float
    rules: tuple[str, ...]
    """Ids of the rules that matched, in file order."""
    categories: dict[str, float]
    """Score per category."""
    roles: tuple[str, ...]
    """Roles whose text matched."""

    @property
    def top_category(self) -> str:
        return max(sorted(self.categories), key=lambda c: self.categories[c])


class RuleScanner:
    """Scores texts by the weights of the rules (of one scanner) that match them."""

    def __init__(self, rules: Sequence[_Rule], *, where: str) -> None:
        self._rules = list(rules)
        self._set = PatternSet(
            [(r.id, r.pattern) for r in rules], case_sensitive=False, where=where
        )

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self._rules)

    @property
    def patterns(self) -> PatternSet:
        return self._set

    def scan(self, by_role: Mapping[str, str]) -> RuleHits | None:
        """`by_role`: each role's texts, joined. None when no rule matches."""
        return self.score({role: self._set.matching(text) for role, text in by_role.items()})

    def score(self, matched_by_role: Mapping[str, Sequence[int]]) -> RuleHits | None:
        """The score of the rules that matched, given per role (rule indexes). None: none."""
        matched: set[int] = set()
        roles: list[str] = []
        for role, found in matched_by_role.items():
            if found:
                matched.update(found)
                roles.append(role)
        if not matched:
            return None
        categories: dict[str, float] = {}
        for index in matched:
            rule = self._rules[index]
            categories[rule.category] = categories.get(rule.category, 0.0) + rule.weight
        return RuleHits(
            score=round(sum(self._rules[i].weight for i in matched), 3),
            rules=tuple(self._rules[i].id for i in sorted(matched)),
            categories={c: round(s, 3) for c, s in categories.items()},
            roles=tuple(sorted(roles)),
        )


@dataclass(frozen=True)
class ContentPolicies:
    """The compiled scanners, shared by every org's chain (built once per process)."""

    pii: PiiScanner
    safety: RuleScanner
    security: RuleScanner

    @cached_property
    def _index(self) -> tuple[PatternSet, dict[int, tuple[int, int]]]:
        """Every pattern of the three scanners in one RE2 set (the rules' case-insensitivity
        inlined as `(?i)`), and each scanner's (offset, count) in it: a call's text is
        scanned once for all three steps, not three times."""
        parts = [self.pii.patterns, self.safety.patterns, self.security.patterns]
        combined: list[tuple[str, str]] = []
        spans: dict[int, tuple[int, int]] = {}
        for owner, patterns in zip((self.pii, self.safety, self.security), parts, strict=True):
            spans[id(owner)] = (len(combined), len(patterns.patterns))
            flag = "" if patterns.case_sensitive else "(?i)"
            combined += [(f"#{len(combined)}", flag + p) for p in patterns.patterns]
        return PatternSet(combined, case_sensitive=True, where="content patterns"), spans

    def matches(self, ctx: CallContext, role: str, scanner: PiiScanner | RuleScanner) -> list[int]:
        """Indexes of `scanner`'s patterns that match `role`'s text in this call. One set scan
        per role and call, shared by every step that asks (`CallContext.memo`)."""
        index, spans = self._index
        found: frozenset[int] = ctx.memo(
            (id(self), role), lambda: frozenset(index.matching(ctx.role_texts.get(role, "")))
        )
        offset, count = spans[id(scanner)]
        return sorted(i - offset for i in found if offset <= i < offset + count)

    def redactor(self) -> Callable[[str], tuple[str, list[str]]]:
        """Every PII type of pii.yaml redacted: for stored transcripts (a `Redactor`)."""
        scanner, wanted = self.pii, self.pii.types

        def redact(text: str) -> tuple[str, list[str]]:
            out, found = scanner.redact(text, wanted)
            return out, sorted(found)

        return redact

    @classmethod
    def load(cls, directory: Path) -> ContentPolicies:
        """Read and compile pii.yaml and content_rules.yaml; a bad file or pattern raises
        `PolicyConfigError` naming the file and the rule."""
        pii_path, rules_path = directory / "pii.yaml", directory / "content_rules.yaml"
        pii: _PiiFile = _load(pii_path, _PiiFile)
        rules: _RulesFile = _load(rules_path, _RulesFile)
        seen: set[str] = set()
        for rule in rules.rules:
            if rule.id in seen:
                raise PolicyConfigError(f"{rules_path}: rules: {rule.id!r} is listed twice")
            seen.add(rule.id)
        where = str(rules_path)
        return cls(
            pii=PiiScanner(pii.patterns, where=str(pii_path)),
            safety=RuleScanner([r for r in rules.rules if r.scanner == "safety"], where=where),
            security=RuleScanner([r for r in rules.rules if r.scanner == "security"], where=where),
        )
