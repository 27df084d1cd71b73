"""HTTP routes, one module per resource."""

from . import runners, sessions

__all__ = ["runners", "sessions"]
