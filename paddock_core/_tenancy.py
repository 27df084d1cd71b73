"""Tenancy records: orgs, teams, users and API keys, and what each role may do.

Keys look like `pdk_<id>_<secret>`: `pdk_<id>` identifies the key (shown in lists and audit
records); only the SHA-256 of the whole key is stored. The key itself is shown once, at creation.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ._records import utcnow

__all__ = ["ApiKeyRecord", "OrgRecord", "Role", "TeamRecord", "UserRecord"]


class Role(StrEnum):
    """admin: everything in the org. operator: runners, sessions, messages. viewer: read only.
    gateway: LLM calls through the gateway only, nothing on the control plane."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    GATEWAY = "gateway"

    @property
    def can_read(self) -> bool:
        return self in (Role.ADMIN, Role.OPERATOR, Role.VIEWER)

    @property
    def can_operate(self) -> bool:
        return self in (Role.ADMIN, Role.OPERATOR)

    @property
    def can_administer(self) -> bool:
        return self is Role.ADMIN

    @property
    def can_call_models(self) -> bool:
        return self in (Role.ADMIN, Role.OPERATOR, Role.GATEWAY)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgRecord(_Record):
    id: str
    name: str
    created_at: datetime = Field(default_factory=utcnow)


class TeamRecord(_Record):
    id: str
    org_id: str
    name: str
    created_at: datetime = Field(default_factory=utcnow)


class UserRecord(_Record):
    id: str
    org_id: str
    team_id: str | None = None
    name: str
    email: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ApiKeyRecord(_Record):
    id: str
    """The public prefix `pdk_<8 hex>`, unique."""
    org_id: str
    role: Role
    name: str
    key_hash: str
    team_id: str | None = None
    user_id: str | None = None
    created_by: str
    models: list[str] | None = None
    """This key's own model allowlist (globs), within its org's; None: the org's."""
    skills: list[str] | None = None
    """This key's own tool allowlist (globs), within its org's; None: the org's."""
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)
