"""Paddock's shared core: errors, settings, policy data, records, the store and the audit chain.

Both `controlplane` and `gateway` import this package; it imports neither.
"""

from ._audit import GENESIS_HASH, canonical_bytes, chain_hash, verify_chain
from ._errors import (
    AuthenticationError,
    BackendError,
    BudgetExceededError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PaddockError,
    PermissionDeniedError,
    StoreError,
    UpstreamError,
    VersionConflictError,
)
from ._policies import ModelPrice, Policies, Profile, ProviderSpec, SandboxLevel, load_policies
from ._records import AuditEvent, LlmCallRecord, RunnerRecord, SessionRecord, new_id, utcnow
from ._settings import DEFAULT_POLICIES_DIR, CoreSettings
from ._sqlite import SqliteStore
from ._store import (
    AppendAudit,
    BatchResult,
    InsertRunner,
    InsertSession,
    Operation,
    RecordLlmCall,
    Store,
    UpdateRunner,
    UpdateSession,
)
from ._tokens import derive_secret, hash_token, key_fingerprint, mint_token

__all__ = [
    "AppendAudit",
    "AuditEvent",
    "AuthenticationError",
    "BackendError",
    "BatchResult",
    "BudgetExceededError",
    "ConflictError",
    "CoreSettings",
    "DEFAULT_POLICIES_DIR",
    "GENESIS_HASH",
    "InsertRunner",
    "InsertSession",
    "InvalidRequestError",
    "LlmCallRecord",
    "ModelPrice",
    "NotFoundError",
    "Operation",
    "PaddockError",
    "PermissionDeniedError",
    "Policies",
    "Profile",
    "ProviderSpec",
    "RecordLlmCall",
    "RunnerRecord",
    "SandboxLevel",
    "SessionRecord",
    "SqliteStore",
    "Store",
    "StoreError",
    "UpdateRunner",
    "UpdateSession",
    "UpstreamError",
    "VersionConflictError",
    "canonical_bytes",
    "chain_hash",
    "derive_secret",
    "hash_token",
    "key_fingerprint",
    "load_policies",
    "mint_token",
    "new_id",
    "open_store",
    "utcnow",
    "verify_chain",
]


def open_store(url: str) -> Store:
    """The store for a database URL (not yet opened)."""
    if url.startswith("sqlite:///"):
        return SqliteStore.from_url(url)
    raise StoreError(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
