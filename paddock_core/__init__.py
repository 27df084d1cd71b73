"""Paddock's shared core: errors, settings, policy data, records, the store and the audit chain.

Both `controlplane` and `gateway` import this package; it imports neither.
"""

from ._approvals import (
    APPROVAL_STATUSES,
    ApprovalRecord,
    ApprovalStatus,
    claim_approval,
    decide_approval,
    expire_approval,
    expire_overdue,
    get_approval,
    purge_decided,
    put_approval,
)
from ._audit import (
    GENESIS_HASH,
    AuditRow,
    ChainLink,
    ChainVerifier,
    VerifyReport,
    canonical_bytes,
    canonical_data,
    chain_hash,
    format_time,
    verify_chain,
)
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
from ._keys import API_KEY_PREFIX, authenticate_api_key, mint_api_key
from ._notify import LocalNotifier, Notifier, NotifyingStore, RedisNotifier, make_notifier
from ._org_gateway import OrgGatewayRecord, open_provider_key, seal_provider_key
from ._policies import ModelPrice, Policies, Profile, ProviderSpec, SandboxLevel, load_policies
from ._records import (
    AuditEvent,
    LlmCallRecord,
    RunnerRecord,
    SessionRecord,
    TranscriptEntry,
    new_id,
    utcnow,
)
from ._settings import DEFAULT_POLICIES_DIR, CoreSettings
from ._signing import CheckpointSigner, check_checkpoints, verify_checkpoint_signature
from ._sqlite import SqliteStore
from ._store import (
    AppendAudit,
    AppendCheckpoint,
    AppendTranscript,
    AuditCheckpoint,
    AuditQuery,
    BatchResult,
    DeleteObject,
    InsertRunner,
    InsertSession,
    ObjectKind,
    Operation,
    PurgeTranscripts,
    PutObject,
    RecordLlmCall,
    Store,
    UpdateObject,
    UpdateRunner,
    UpdateSession,
)
from ._tenancy import ApiKeyRecord, OrgRecord, Role, TeamRecord, UserRecord
from ._tokens import derive_secret, hash_token, key_fingerprint, mint_token
from ._transcripts import Redactor, TranscriptSettings, make_entry, transcript_settings
from ._verify import ExportCheck, export_line, verify_export, verify_stored_chain

__all__ = [
    "APPROVAL_STATUSES",
    "API_KEY_PREFIX",
    "ApprovalRecord",
    "ApprovalStatus",
    "ApiKeyRecord",
    "AppendAudit",
    "AppendCheckpoint",
    "AppendTranscript",
    "AuditCheckpoint",
    "AuditQuery",
    "AuditRow",
    "ChainLink",
    "ChainVerifier",
    "ExportCheck",
    "CheckpointSigner",
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
    "LocalNotifier",
    "ModelPrice",
    "NotFoundError",
    "Notifier",
    "NotifyingStore",
    "ObjectKind",
    "OrgGatewayRecord",
    "Operation",
    "OrgRecord",
    "PaddockError",
    "PermissionDeniedError",
    "Policies",
    "Profile",
    "ProviderSpec",
    "DeleteObject",
    "PurgeTranscripts",
    "PutObject",
    "RecordLlmCall",
    "RedisNotifier",
    "Role",
    "RunnerRecord",
    "SandboxLevel",
    "SessionRecord",
    "TranscriptEntry",
    "Redactor",
    "TranscriptSettings",
    "make_entry",
    "transcript_settings",
    "SqliteStore",
    "Store",
    "StoreError",
    "TeamRecord",
    "UpdateObject",
    "UpdateRunner",
    "UpdateSession",
    "UpstreamError",
    "UserRecord",
    "VerifyReport",
    "VersionConflictError",
    "authenticate_api_key",
    "canonical_bytes",
    "canonical_data",
    "chain_hash",
    "claim_approval",
    "decide_approval",
    "expire_approval",
    "expire_overdue",
    "purge_decided",
    "get_approval",
    "put_approval",
    "derive_secret",
    "format_time",
    "hash_token",
    "key_fingerprint",
    "load_policies",
    "make_notifier",
    "mint_api_key",
    "mint_token",
    "seal_provider_key",
    "new_id",
    "open_provider_key",
    "open_store",
    "utcnow",
    "verify_chain",
    "verify_export",
    "verify_stored_chain",
    "check_checkpoints",
    "export_line",
    "verify_checkpoint_signature",
]


def open_store(url: str) -> Store:
    """The store for a database URL (not yet opened): `sqlite:///path`, or `mongodb://` and
    `mongodb+srv://` (database from the URL's path, `paddock` by default; a replica set)."""
    if url.startswith("sqlite:///"):
        return SqliteStore.from_url(url)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from ._mongo import MongoStore  # here: importing pymongo costs SQLite users ~0.2 s

        return MongoStore.from_url(url)
    raise StoreError(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
