"""Paddock composition root: the CLI, `paddock serve` and the shipped fake provider."""

__all__: list[str] = []
