"""Provider protocols: adapters per (client API, provider protocol), translation between
OpenAI chat and Anthropic messages (requests, answers, streams), and the stream meters."""

from ._adapters import API_NAMES, Adapter, Endpoint, adapter_for, client_protocol
from ._meters import (
    AnthropicMeter,
    ChatMeter,
    Meter,
    PassThrough,
    ResponsesMeter,
    SseSplitter,
    StreamHandler,
)
from ._streams import sse_data, sse_event

__all__ = [
    "API_NAMES",
    "Adapter",
    "AnthropicMeter",
    "ChatMeter",
    "Endpoint",
    "Meter",
    "PassThrough",
    "ResponsesMeter",
    "SseSplitter",
    "StreamHandler",
    "adapter_for",
    "client_protocol",
    "sse_data",
    "sse_event",
]
