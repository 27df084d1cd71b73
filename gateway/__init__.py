"""Paddock's governance gateway: an OpenAI-compatible proxy that authenticates runners, enforces
budgets, routes models to providers and records every call with its audit event."""

from ._app import create_gateway
from ._settings import GatewaySettings

__all__ = ["GatewaySettings", "create_gateway"]
