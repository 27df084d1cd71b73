"""One adapter per (client API, provider protocol): the upstream path and body, how to read
usage from the answer, and how the answer reaches the client (as is, or translated).

    client API      openai provider              anthropic provider
    chat            pass through                 translate (chat <-> messages)
    messages        translate (messages <-> chat) pass through
    responses       pass through (if offered)    refused: no Responses API there
    embeddings      pass through (if offered)    refused
    count_tokens    estimated locally            pass through
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from paddock_core import InvalidRequestError, ProviderSpec

from .._usage import Usage, anthropic_usage, openai_usage, responses_usage, text_chars
from ._meters import AnthropicMeter, ChatMeter, PassThrough, ResponsesMeter, StreamHandler
from ._replies import chat_to_message, message_to_chat
from ._requests import chat_to_messages, messages_to_chat
from ._streams import AnthropicToChat, ChatToAnthropic

__all__ = ["API_NAMES", "Adapter", "Endpoint", "adapter_for", "client_protocol"]

Endpoint = Literal["chat", "responses", "embeddings", "messages", "count_tokens"]

API_NAMES: dict[str, str] = {
    "chat": "chat.completions",
    "responses": "responses",
    "embeddings": "embeddings",
    "messages": "messages",
    "count_tokens": "messages.count_tokens",
}
_DEFAULT_ENDPOINTS = {"openai": ("chat",), "anthropic": ("messages", "count_tokens")}
# Headers of the client's request that mean something to an Anthropic upstream.
_ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")


def client_protocol(endpoint: str) -> Literal["openai", "anthropic"]:
    return "anthropic" if endpoint in ("messages", "count_tokens") else "openai"


class Adapter(Protocol):
    path: str
    """Appended to the provider's base URL."""
    translated: bool

    def body(self, body: dict[str, Any], model: str) -> dict[str, Any]: ...

    def headers(self, client_headers: Mapping[str, str]) -> dict[str, str]: ...

    def usage(self, data: Any) -> Usage | None: ...

    def reply_chars(self, data: Any) -> int: ...

    def reply(self, data: dict[str, Any], model: str, usage: Usage | None) -> dict[str, Any]:
        """The client's answer (only called when `translated`)."""
        ...

    def stream(self, model: str) -> StreamHandler: ...


def _choices_chars(data: Any) -> int:
    total = 0
    for choice in data.get("choices") or () if isinstance(data, dict) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            total += text_chars(message.get("content"))
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    total += len(function["arguments"])
    return total


def _blocks_chars(data: Any) -> int:
    return text_chars(data.get("content")) if isinstance(data, dict) else 0


def _output_chars(data: Any) -> int:
    output = data.get("output") if isinstance(data, dict) else None
    return sum(text_chars(o.get("content")) for o in output or () if isinstance(o, dict))


def _usage_of(data: Any) -> Any:
    return data.get("usage") if isinstance(data, dict) else None


@dataclass(frozen=True)
class _Base:
    spec: ProviderSpec
    default_max_tokens: int

    def headers(self, client_headers: Mapping[str, str]) -> dict[str, str]:
        headers = dict(self.spec.headers)
        if self.spec.protocol == "anthropic":
            sent = {h: client_headers[h] for h in _ANTHROPIC_HEADERS if h in client_headers}
            headers.update(sent)
        return headers

    def reply(self, data: dict[str, Any], model: str, usage: Usage | None) -> dict[str, Any]:
        del model, usage
        return data


def _with_usage_option(body: dict[str, Any]) -> dict[str, Any]:
    # Ask for the usage chunk whatever the client asked: it is what the call is billed by.
    if body.get("stream"):
        options = body.get("stream_options")
        body["stream_options"] = {**(options or {}), "include_usage": True}
    return body


@dataclass(frozen=True)
class _ChatPassThrough(_Base):
    path: str = "/chat/completions"
    translated: bool = False

    def body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return _with_usage_option({**body, "model": model})

    def usage(self, data: Any) -> Usage | None:
        return openai_usage(_usage_of(data))

    def reply_chars(self, data: Any) -> int:
        return _choices_chars(data)

    def stream(self, model: str) -> StreamHandler:
        del model  # the answer passes through as the provider wrote it
        return PassThrough(ChatMeter())


@dataclass(frozen=True)
class _ChatToAnthropic(_Base):
    path: str = "/v1/messages"
    translated: bool = True

    def body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return chat_to_messages(body, model, self.default_max_tokens)

    def usage(self, data: Any) -> Usage | None:
        return anthropic_usage(_usage_of(data))

    def reply_chars(self, data: Any) -> int:
        return _blocks_chars(data)

    def reply(self, data: dict[str, Any], model: str, usage: Usage | None) -> dict[str, Any]:
        return message_to_chat(data, model, usage)

    def stream(self, model: str) -> StreamHandler:
        return AnthropicToChat(model)


@dataclass(frozen=True)
class _MessagesPassThrough(_Base):
    path: str = "/v1/messages"
    translated: bool = False

    def body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return {**body, "model": model}

    def usage(self, data: Any) -> Usage | None:
        return anthropic_usage(_usage_of(data))

    def reply_chars(self, data: Any) -> int:
        return _blocks_chars(data)

    def stream(self, model: str) -> StreamHandler:
        del model  # the answer passes through as the provider wrote it
        return PassThrough(AnthropicMeter())


@dataclass(frozen=True)
class _MessagesToChat(_Base):
    path: str = "/chat/completions"
    translated: bool = True

    def body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return _with_usage_option(messages_to_chat(body, model, self.spec.max_tokens_field))

    def usage(self, data: Any) -> Usage | None:
        return openai_usage(_usage_of(data))

    def reply_chars(self, data: Any) -> int:
        return _choices_chars(data)

    def reply(self, data: dict[str, Any], model: str, usage: Usage | None) -> dict[str, Any]:
        return chat_to_message(data, model, usage)

    def stream(self, model: str) -> StreamHandler:
        return ChatToAnthropic(model)


@dataclass(frozen=True)
class _ResponsesPassThrough(_Base):
    path: str = "/responses"
    translated: bool = False

    def body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return {**body, "model": model}

    def usage(self, data: Any) -> Usage | None:
        return responses_usage(_usage_of(data))

    def reply_chars(self, data: Any) -> int:
        return _output_chars(data)

    def stream(self, model: str) -> StreamHandler:
        del model  # the answer passes through as the provider wrote it
        return PassThrough(ResponsesMeter())


@dataclass(frozen=True)
class _EmbeddingsPassThrough(_ChatPassThrough):
    path: str = "/embeddings"

    def body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return {**body, "model": model}

    def reply_chars(self, data: Any) -> int:
        del data  # embeddings generate no text
        return 0


@dataclass(frozen=True)
class _CountTokensPassThrough(_MessagesPassThrough):
    path: str = "/v1/messages/count_tokens"

    def body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        kept = {k: v for k, v in body.items() if k not in ("stream", "max_tokens")}
        return {**kept, "model": model}


_ADAPTERS: dict[tuple[str, str], type[_Base]] = {
    ("chat", "openai"): _ChatPassThrough,
    ("chat", "anthropic"): _ChatToAnthropic,
    ("messages", "anthropic"): _MessagesPassThrough,
    ("messages", "openai"): _MessagesToChat,
    ("responses", "openai"): _ResponsesPassThrough,
    ("embeddings", "openai"): _EmbeddingsPassThrough,
    ("count_tokens", "anthropic"): _CountTokensPassThrough,
}


def adapter_for(endpoint: Endpoint, spec: ProviderSpec, default_max_tokens: int) -> Adapter:
    """The adapter for a call to `endpoint` served by `spec`; InvalidRequestError if the
    provider offers no such API (and the gateway cannot translate to one it does offer)."""
    offered = spec.endpoints or _DEFAULT_ENDPOINTS[spec.protocol]
    # Chat and messages translate into each other: a provider offering either serves both.
    native = endpoint in offered or (
        endpoint in ("chat", "messages") and ({"chat", "messages"} & set(offered))
    )
    cls = _ADAPTERS.get((endpoint, spec.protocol))
    if cls is None or not native:
        raise InvalidRequestError(
            f"provider {spec.name!r} does not offer the {API_NAMES[endpoint]} API"
            f" (it speaks the {spec.protocol} protocol with: {', '.join(offered)})",
            field="model",
            reason="endpoint_not_supported",
        )
    adapter: Adapter = cls(spec=spec, default_max_tokens=default_max_tokens)  # type: ignore[assignment]
    return adapter
