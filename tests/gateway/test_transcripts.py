"""What the gateway adds to a session's transcript: the turn the agent sent and what came
back (text and tool calls), streamed or not, in both protocols; text only when the org opts in,
PII redacted before it is stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anthropic import Anthropic
from openai import OpenAI

from paddock_core import OrgGatewayRecord, TranscriptEntry, new_id
from tests.gateway.harness import Records, Seeded

LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def _org(records: Records, *, content: bool) -> str:
    org = new_id("org")
    records.put_org_gateway(OrgGatewayRecord(id=org, org_id=org, transcript_content=content))
    return org


def _transcript(records: Records, seeded: Seeded) -> list[TranscriptEntry]:
    assert seeded.session_id is not None
    session_id = seeded.session_id
    return records._run(lambda store: store.list_transcript(session_id))


def test_a_stream_with_pii_and_a_tool_call_is_kept_redacted(
    records: Records, client_for: Callable[[str], OpenAI]
) -> None:
    org = _org(records, content=True)
    seeded = records.runner(org_id=org)
    client = client_for(seeded.token)
    first = "mail me at ada@example.com then TOOL:lookup ECHO:w1"
    messages: list[Any] = [{"role": "user", "content": first}]
    stream = client.chat.completions.create(
        model="fake-gpt", messages=messages, tools=[LOOKUP], stream=True
    )
    chunks = list(stream)
    call_id = next(c.id for c in chunks for ch in c.choices for t in ch.delta.tool_calls or ())
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"echo": "w1"}'},
                }
            ],
        }
    )
    messages.append(
        {"role": "tool", "tool_call_id": call_id, "content": "card 4111 1111 1111 1111"}
    )
    client.chat.completions.create(model="fake-gpt", messages=messages)

    entries = _transcript(records, seeded)
    assert [(e.kind, e.role) for e in entries] == [
        ("model_request", "user"),
        ("tool_call", "assistant"),
        ("tool_result", "tool"),
        ("model_reply", "assistant"),
    ]
    request, tool_call, tool_result, reply = entries
    assert request.text is not None and "ada@example.com" not in request.text
    # The chain's PII step (redact, by default) already replaced it in what the model saw.
    assert request.text == "mail me at [REDACTED:email] then TOOL:lookup ECHO:w1"
    assert request.redacted == ["email"] and request.chars == len(request.text)
    assert tool_call.data["tool"] == "lookup" and tool_call.text == '{"echo": "w1"}'
    assert tool_result.text is not None and "4111" not in tool_result.text
    assert tool_result.redacted == ["card"]
    assert reply.text is not None and reply.text.startswith("Fake reply")
    assert {e.source for e in entries} == {"gateway"}
    assert len({e.data["call_id"] for e in entries}) == 2


def test_without_the_orgs_consent_only_metadata_is_kept(
    records: Records, anthropic_for: Callable[[str], Anthropic]
) -> None:
    org = _org(records, content=False)
    seeded = records.runner(org_id=org)
    anthropic_for(seeded.token).messages.create(
        model="fake-claude",
        max_tokens=50,
        messages=[{"role": "user", "content": "secret plan ECHO:quiet"}],
    )
    entries = _transcript(records, seeded)
    assert [(e.kind, e.text) for e in entries] == [("model_request", None), ("model_reply", None)]
    assert entries[0].chars == len("secret plan ECHO:quiet")
    assert entries[1].chars == len("Fake reply. ECHO:quiet")
