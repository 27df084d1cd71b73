"""`python -m paddock` is the `paddock` command."""

from .cli import main

main()
