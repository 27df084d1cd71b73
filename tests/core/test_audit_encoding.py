"""The fast canonical encoding is byte for byte the one the audit format describes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import TypeAdapter

from paddock_core import GENESIS_HASH, AuditEvent, AuditRow, ChainVerifier, chain_hash, format_time
from paddock_core._audit import link


def reference_hash(event: AuditEvent) -> str:
    """The format as `_audit`'s docstring states it, written the slow, obvious way."""
    body = {
        "actor": event.actor,
        "data": "DATA",
        "org_id": event.org_id,
        "prev_hash": event.prev_hash,
        "runner_id": event.runner_id,
        "seq": event.seq,
        "session_id": event.session_id,
        "time": event.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "type": event.type,
    }
    data = json.dumps(event.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.replace('"DATA"', data, 1).encode()).hexdigest()


@pytest.mark.parametrize(
    "time",
    [
        datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-7))),
        datetime(999, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        TypeAdapter(datetime).validate_python("2030-05-01T01:02:03.5Z"),
    ],
)
def test_format_time_is_strftime(time: datetime) -> None:
    assert format_time(time) == time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize(
    "fields",
    [
        {"data": {"é": 'ü\u2028\x00"\\', "n": [1, 2.5, None, True, {"b": 1, "a": 2}]}},
        {"runner_id": "rn_😀", "session_id": "ss_\t", "actor": 'a"b', "type": "t\u00e9"},
        {"data": {}, "runner_id": None},
    ],
)
def test_link_matches_the_documented_format(fields: dict[str, Any]) -> None:
    event = AuditEvent(**{"org_id": "org_é", "actor": "pdk_x", "type": "t", **fields})
    linked, row = link(event, 7, "ab" * 32)
    assert linked.hash == row.hash == chain_hash(linked) == reference_hash(linked)
    assert row == AuditRow.of(linked)


def test_a_malformed_row_is_reported_not_raised() -> None:
    verifier = ChainVerifier()
    # An export edited by hand can hold any JSON type where a string belongs.
    row = AuditRow("o", 1, "t", 5, "type", None, None, "{}", GENESIS_HASH, "0" * 64)  # type: ignore[arg-type]
    assert verifier.feed(row) is False
    assert verifier.report().problem == "hash_mismatch"
