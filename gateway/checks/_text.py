"""Texts as the content scanners see them: normalized, and several joined into one.

Texts of several messages are scanned joined by `_SEP` (a NUL between newlines), which no
shipped pattern crosses, so a match never spans two messages.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

__all__ = ["joined", "normalized"]

_SEP = "\n\x00\n"
# Invisible characters used to split a keyword so a pattern misses it ("ig\u200bnore").
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u034f\u180e\u200b\u200c\u200d\u2060\ufeff"))


def normalized(text: str) -> str:
    """ASCII text as is (the common case, at no cost); anything else NFKC-folded (fullwidth and
    other look-alike forms become plain letters) with invisible characters removed."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text.translate(_INVISIBLE))


def joined(texts: Iterable[str]) -> str:
    return _SEP.join([normalized(t) for t in texts])
