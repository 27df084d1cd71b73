from . import _harness

__all__ = ["_harness"]
