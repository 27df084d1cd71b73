"""The OpenClaw configuration of one runner, rendered from its profile.

Secrets are never written into it: `${VAR}` strings are filled by OpenClaw from the runner's
environment (the runner token for the Paddock gateway, the agent token the control plane uses).
The provider is the Paddock gateway; no provider key exists inside a runner.

The profile sets OpenClaw's own tool policy, a second layer behind the container: the tools
profile and denied groups, the exec mode (the allowlist itself is seeded by the image's
entrypoint from PADDOCK_EXEC_ALLOWLIST), and, for profiles with egress, web fetches through the
egress proxy. The proxy comes from the runner's environment (HTTP(S)_PROXY with the runner's
credentials, NO_PROXY for the gateway, NODE_USE_ENV_PROXY=1; set by the backend, which knows
the runner's bridge address); `useTrustedEnvProxy` lets the proxy resolve names, since a runner
resolves none itself.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from paddock_core import Profile

__all__ = ["AGENT_APIS", "DEFAULT_API", "encode_config", "render_openclaw_config"]

AGENT_APIS = ("openai-completions", "anthropic-messages")
"""The gateway APIs an OpenClaw runner can be configured with (OpenClaw's `api` names): OpenAI
chat completions, or Anthropic messages (sent to the same base URL: OpenClaw posts to
`{baseUrl}/messages` when it ends in /v1, as the gateway's does, with the token as x-api-key)."""
DEFAULT_API = AGENT_APIS[0]

_EXEC_MODE = {"deny": "deny", "allowlist": "allowlist", "full": "full"}


def render_openclaw_config(
    profile: Profile, *, model: str, max_tokens: int = 4096, api: str = DEFAULT_API
) -> dict[str, Any]:
    tools: dict[str, Any] = {
        "profile": profile.openclaw.tools_profile,
        "exec": {"mode": _EXEC_MODE[profile.exec]},
        "fs": {"workspaceOnly": True},
    }
    if profile.openclaw.deny:
        tools["deny"] = list(profile.openclaw.deny)
    if profile.network != "gateway_only":
        tools["web"] = {"fetch": {"useTrustedEnvProxy": True}}
    return {
        "gateway": {
            "mode": "local",
            "bind": "lan",
            "port": 18789,
            "auth": {"token": "${OPENCLAW_GATEWAY_TOKEN}"},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
        },
        "update": {"checkOnStart": False},
        "models": {
            "providers": {
                "paddock": {
                    "baseUrl": "${PADDOCK_GATEWAY_URL}",
                    "apiKey": "${PADDOCK_RUNNER_TOKEN}",
                    "api": api,
                    "models": [
                        {
                            "id": model,
                            "name": model,
                            "contextWindow": 128000,
                            "maxTokens": max_tokens,
                            "input": ["text"],
                            "compat": {"supportsUsageInStreaming": True},
                        }
                    ],
                }
            }
        },
        "agents": {
            "defaults": {
                "model": {"primary": f"paddock/{model}"},
                "sandbox": {"mode": "off"},
                "workspace": _workspace(profile),
            }
        },
        "tools": tools,
    }


def _workspace(profile: Profile) -> str:
    """Where OpenClaw keeps its working files.

    OpenClaw writes bootstrap files into its workspace on every turn. With a read-only
    workspace (minimal) they go to its private state on the tmpfs in $HOME, and /workspace
    (the user's files) stays read-only.
    """
    if profile.filesystem.workspace_writable:
        return "/workspace"
    return "/home/agent/.openclaw/workspace"


def encode_config(config: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(config, separators=(",", ":")).encode()).decode()
