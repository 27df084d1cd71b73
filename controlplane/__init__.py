"""Paddock control plane: REST API that launches runners and drives their lifecycle."""

from .app import create_app
from .settings import ControlPlaneSettings

__all__ = ["ControlPlaneSettings", "create_app"]
