"""An org's gateway settings, and the sealing of its provider keys at rest.

Stored as the `org_gateway` object whose id is the org's id. Provider keys are never stored in
clear: each is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the master
`secret_key` and the org's id, with `org_id:provider` as associated data, so a sealed key copied
to another org or another provider does not open.

    sealed = "v1." + base64url(nonce(12) || ciphertext || tag(16))
"""

from __future__ import annotations

import base64
import os
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field

from ._errors import StoreError
from ._records import utcnow

__all__ = ["OrgGatewayRecord", "open_provider_key", "seal_provider_key"]

_VERSION = "v1."
_NONCE = 12


class OrgGatewayRecord(BaseModel):
    """What an org changes about the gateway. Empty maps mean "the gateway's defaults"."""

    model_config = ConfigDict(extra="forbid")

    id: str
    """The org's id (one record per org)."""
    org_id: str
    cache_enabled: bool | None = None
    """The exact-match response cache for this org; None = the gateway's default (off)."""
    aliases: dict[str, str] = Field(default_factory=dict)
    """Model aliases (`fast` -> `gpt-4o-mini`), over the gateway's own."""
    provider_keys: dict[str, str] = Field(default_factory=dict)
    """Provider name -> sealed key (see `seal_provider_key`); never a key in clear."""
    provider_base_urls: dict[str, str] = Field(default_factory=dict)
    """Provider name -> base URL, over policies/providers.yaml (e.g. the org's Azure resource)."""
    plan: str | None = None
    """The org's plan (policies/plans.yaml); None: the gateway's default."""
    policy: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """The org's own step settings (policies/chain.yaml `steps` format), over its plan's."""
    transcript_content: bool = False
    """Keep the (PII-redacted) text of session transcripts; False: metadata only."""
    transcript_retention_days: int = 30
    """Days a transcript entry is kept."""
    updated_at: datetime = Field(default_factory=utcnow)


def _aead(secret_key: str, org_id: str) -> AESGCM:
    kdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"paddock/provider-keys/v1",
        info=org_id.encode(),
    )
    return AESGCM(kdf.derive(secret_key.encode()))


def seal_provider_key(secret_key: str, org_id: str, provider: str, key: str) -> str:
    """The sealed form of an org's provider key, safe to store."""
    nonce = os.urandom(_NONCE)
    sealed = _aead(secret_key, org_id).encrypt(nonce, key.encode(), f"{org_id}:{provider}".encode())
    return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_provider_key(secret_key: str, org_id: str, provider: str, sealed: str) -> str:
    """The key sealed by `seal_provider_key`; StoreError if it was not sealed for this org and
    provider under this secret key (or was altered)."""
    if not sealed.startswith(_VERSION):
        raise StoreError(f"provider key for {provider!r} of org {org_id!r} is not sealed (v1)")
    try:
        raw = base64.urlsafe_b64decode(sealed[len(_VERSION) :].encode())
        plain = _aead(secret_key, org_id).decrypt(
            raw[:_NONCE], raw[_NONCE:], f"{org_id}:{provider}".encode()
        )
    except (InvalidTag, ValueError) as exc:
        raise StoreError(
            f"cannot open the provider key for {provider!r} of org {org_id!r}"
            " (wrong secret key, or altered)"
        ) from exc
    return plain.decode()
