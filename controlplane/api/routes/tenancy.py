"""Orgs, teams, users and API keys. Keys are shown once, at creation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from paddock_core import ApiKeyRecord, OrgRecord, Role, TeamRecord, UserRecord

from ...services.tenancy import OrgPolicy
from ..deps import Admin, Reader, Tenancy

router = APIRouter(prefix="/v1", tags=["tenancy"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgCreate(_In):
    name: str = Field(min_length=1, max_length=200)


class TeamCreate(_In):
    name: str = Field(min_length=1, max_length=200)


class UserCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(None, max_length=320)
    team_id: str | None = None


class KeyCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    team_id: str | None = None
    user_id: str | None = None
    expires_in_s: float | None = Field(None, gt=0, description="lifetime, seconds")
    org_id: str | None = Field(None, description="platform admin only: a key for another org")
    models: list[str] | None = Field(
        None, max_length=100, description="model allowlist (globs), within the org's"
    )
    skills: list[str] | None = Field(
        None, max_length=100, description="tool allowlist (globs), within the org's"
    )


class KeyPublic(BaseModel):
    id: str
    org_id: str
    role: Role
    name: str
    team_id: str | None
    user_id: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    models: list[str] | None = None
    skills: list[str] | None = None

    @classmethod
    def of(cls, k: ApiKeyRecord) -> KeyPublic:
        return cls.model_validate(k.model_dump(exclude={"key_hash"}))


class KeyCreated(KeyPublic):
    key: str = Field(description="the API key; shown this once, stored only as a hash")


@router.post("/orgs", status_code=status.HTTP_201_CREATED)
async def create_org(body: OrgCreate, who: Admin, tenancy: Tenancy) -> OrgRecord:
    return await tenancy.create_org(who, body.name)


@router.get("/orgs/{org_id}")
async def get_org(org_id: str, who: Reader, tenancy: Tenancy) -> OrgRecord:
    return await tenancy.get_org(who, org_id)


class PolicyUpdate(_In):
    plan: str | None = Field(None, description="a plan of policies/plans.yaml; null: default")
    steps: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per step, settings over the plan's (policies/chain.yaml `steps` format)",
    )


@router.get("/orgs/{org_id}/policy")
async def get_org_policy(org_id: str, who: Reader, tenancy: Tenancy) -> OrgPolicy:
    return await tenancy.get_policy(who, org_id)


@router.put("/orgs/{org_id}/policy")
async def set_org_policy(
    org_id: str, body: PolicyUpdate, who: Admin, tenancy: Tenancy
) -> OrgPolicy:
    return await tenancy.set_policy(who, org_id, body.plan, body.steps)


class TranscriptsUpdate(_In):
    content: bool = Field(description="keep the (PII-redacted) text; false: metadata only")
    retention_days: int = Field(30, ge=1, le=3650, description="days an entry is kept")


class TranscriptsPublic(BaseModel):
    org_id: str
    content: bool
    retention_days: int


@router.get("/orgs/{org_id}/transcripts")
async def get_org_transcripts(org_id: str, who: Reader, tenancy: Tenancy) -> TranscriptsPublic:
    got = await tenancy.get_transcripts(who, org_id)
    return TranscriptsPublic(org_id=org_id, content=got.content, retention_days=got.retention_days)


@router.put("/orgs/{org_id}/transcripts")
async def set_org_transcripts(
    org_id: str, body: TranscriptsUpdate, who: Admin, tenancy: Tenancy
) -> TranscriptsPublic:
    got = await tenancy.set_transcripts(who, org_id, body.content, body.retention_days)
    return TranscriptsPublic(org_id=org_id, content=got.content, retention_days=got.retention_days)


@router.post("/teams", status_code=status.HTTP_201_CREATED)
async def create_team(body: TeamCreate, who: Admin, tenancy: Tenancy) -> TeamRecord:
    return await tenancy.create_team(who, body.name)


@router.get("/teams")
async def list_teams(who: Reader, tenancy: Tenancy) -> dict[str, list[TeamRecord]]:
    return {"teams": await tenancy.list_teams(who)}


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, who: Admin, tenancy: Tenancy) -> UserRecord:
    return await tenancy.create_user(who, body.name, body.email, body.team_id)


@router.get("/users")
async def list_users(who: Reader, tenancy: Tenancy) -> dict[str, list[UserRecord]]:
    return {"users": await tenancy.list_users(who)}


@router.post("/keys", status_code=status.HTTP_201_CREATED)
async def create_key(body: KeyCreate, who: Admin, tenancy: Tenancy) -> KeyCreated:
    record, secret = await tenancy.create_key(
        who,
        name=body.name,
        role=body.role,
        team_id=body.team_id,
        user_id=body.user_id,
        expires_in_s=body.expires_in_s,
        org_id=body.org_id,
        models=body.models,
        skills=body.skills,
    )
    return KeyCreated(**KeyPublic.of(record).model_dump(), key=secret)


@router.get("/keys")
async def list_keys(who: Admin, tenancy: Tenancy) -> dict[str, list[KeyPublic]]:
    return {"keys": [KeyPublic.of(k) for k in await tenancy.list_keys(who)]}


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, who: Admin, tenancy: Tenancy) -> KeyPublic:
    return KeyPublic.of(await tenancy.revoke_key(who, key_id))


@router.get("/me")
async def whoami(who: Reader) -> dict[str, Any]:
    return {
        "org_id": who.org_id,
        "actor": who.actor,
        "role": who.role.value,
        "team_id": who.team_id,
        "user_id": who.user_id,
    }
