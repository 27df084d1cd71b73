"""API keys: minting, and turning a presented key into its record (or a 401)."""

from __future__ import annotations

import hmac
import secrets

from ._errors import AuthenticationError
from ._records import utcnow
from ._store import Store
from ._tenancy import ApiKeyRecord
from ._tokens import hash_token

__all__ = ["API_KEY_PREFIX", "authenticate_api_key", "mint_api_key"]

API_KEY_PREFIX = "pdk_"


def mint_api_key() -> tuple[str, str]:
    """(key id, full key). The id (`pdk_<8 hex>`) is public; the key is shown once."""
    key_id = f"{API_KEY_PREFIX}{secrets.token_hex(4)}"
    return key_id, f"{key_id}_{secrets.token_urlsafe(32)}"


def _key_id(token: str) -> str | None:
    if not token.startswith(API_KEY_PREFIX):
        return None
    head, sep, _ = token[len(API_KEY_PREFIX) :].partition("_")
    if not sep or len(head) != 8:
        return None
    return f"{API_KEY_PREFIX}{head}"


async def authenticate_api_key(store: Store, token: str) -> ApiKeyRecord:
    """The live key record for `token`. Unknown, revoked and expired keys are all a 401."""
    key_id = _key_id(token)
    doc = await store.get_object("api_key", key_id) if key_id else None
    if doc is None:
        raise AuthenticationError("unknown API key", reason="invalid_api_key")
    key = ApiKeyRecord.model_validate(doc)
    if not hmac.compare_digest(key.key_hash, hash_token(token)):
        raise AuthenticationError("unknown API key", reason="invalid_api_key")
    if key.revoked_at is not None:
        raise AuthenticationError(f"API key {key.id} was revoked", reason="key_revoked")
    if not key.usable(utcnow()):
        raise AuthenticationError(f"API key {key.id} has expired", reason="key_expired")
    return key
