"""Credentials: minted with `secrets`, stored and compared only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["derive_secret", "hash_token", "key_fingerprint", "mint_token"]


def mint_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_fingerprint(token: str) -> str:
    """What logs may show of a credential: its prefix and a short digest, never the secret."""
    head = token.split("_", 1)[0] if "_" in token else "key"
    return f"{head}…{hash_token(token)[:8]}"


def derive_secret(master: str, purpose: str) -> str:
    """A per-object secret derived from the master key (so it need not be stored)."""
    return hmac.new(master.encode(), purpose.encode(), hashlib.sha256).hexdigest()
