"""Orgs, teams, users and API keys. Every change is an audited admin action. No FastAPI imports."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from gateway.checks import STEPS, ChainPolicy, Plan
from paddock_core import (
    ApiKeyRecord,
    AppendAudit,
    AuditEvent,
    NotFoundError,
    ObjectKind,
    OrgGatewayRecord,
    OrgRecord,
    PermissionDeniedError,
    PutObject,
    Role,
    Store,
    TeamRecord,
    TranscriptSettings,
    UpdateObject,
    UserRecord,
    authenticate_api_key,
    hash_token,
    key_fingerprint,
    mint_api_key,
    new_id,
    transcript_settings,
    utcnow,
)

from ..settings import ControlPlaneSettings
from .runners import Principal

__all__ = ["OrgPolicy", "TenancyService"]


class OrgPolicy(BaseModel):
    """An org's plan and its own governance-chain step settings (policies/chain.yaml format)."""

    org_id: str
    plan: str
    """The plan in force (the org's own choice, else chain.yaml's, else the default)."""
    chosen_plan: str | None
    steps: dict[str, dict[str, Any]]
    version: str | None = None


class TenancyService:
    def __init__(self, *, store: Store, settings: ControlPlaneSettings) -> None:
        self._store = store
        self._settings = settings
        self._chain_policy: ChainPolicy | None = None

    def _chains(self) -> ChainPolicy:
        """The gateway's chain policy files, read once: what an org's settings are checked
        against (the same validation the gateway applies at start)."""
        if self._chain_policy is None:
            self._chain_policy = ChainPolicy.load(self._settings.policies_dir, STEPS)
        return self._chain_policy

    async def ensure_bootstrap_org(self) -> None:
        """The org of the bootstrap admin key exists (created, and audited, at first start)."""
        org_id = self._settings.org_id
        if await self._store.get_object("org", org_id) is None:
            org = OrgRecord(id=org_id, name=org_id)
            await self._put("org", org, org_id, "system", "org.created", {"name": org.name})

    async def authenticate(self, token: str) -> Principal:
        admin = self._settings.admin_key
        if admin is not None and hmac.compare_digest(
            hash_token(token).encode(), hash_token(admin.get_secret_value()).encode()
        ):
            return Principal(
                org_id=self._settings.org_id,
                actor=f"key:{key_fingerprint(token)}",
                role=Role.ADMIN,
                platform=True,
            )
        key = await authenticate_api_key(self._store, token)
        return Principal(
            org_id=key.org_id,
            actor=f"key:{key.id}",
            role=key.role,
            key_id=key.id,
            team_id=key.team_id,
            user_id=key.user_id,
        )

    # --- orgs -----------------------------------------------------------------------------

    async def create_org(self, who: Principal, name: str) -> OrgRecord:
        if not who.platform:
            raise PermissionDeniedError("only the platform admin key can create orgs")
        org = OrgRecord(id=new_id("org"), name=name)
        await self._put("org", org, org.id, who.actor, "org.created", {"name": name})
        return org

    async def get_org(self, who: Principal, org_id: str) -> OrgRecord:
        doc = await self._store.get_object("org", org_id)
        if doc is None or (org_id != who.org_id and not who.platform):
            raise NotFoundError(f"org {org_id} not found", field="org_id")
        return OrgRecord.model_validate(doc)

    # --- an org's plan and chain settings ---------------------------------------------------

    async def plan_for(self, org_id: str) -> Plan:
        """The plan in force for an org (its own choice, else chain.yaml's, else the default)."""
        doc = await self._store.get_object("org_gateway", org_id) or {}
        return self._chains().plan_of(org_id, doc.get("plan"))

    async def get_policy(self, who: Principal, org_id: str) -> OrgPolicy:
        await self.get_org(who, org_id)
        doc = await self._store.get_object("org_gateway", org_id) or {}
        chosen, steps = doc.get("plan"), doc.get("policy") or {}
        plan = self._chains().plan_of(org_id, chosen)
        return OrgPolicy(org_id=org_id, plan=plan.name, chosen_plan=chosen, steps=steps)

    async def set_policy(
        self, who: Principal, org_id: str, plan: str | None, steps: dict[str, dict[str, Any]]
    ) -> OrgPolicy:
        """Replace an org's plan and step settings. Platform admin only: a plan and its limits
        are the operator's to grant, and an org's own settings could loosen them."""
        await self.get_org(who, org_id)  # another org's: 404, as everywhere
        if not who.platform:
            raise PermissionDeniedError(
                "only the platform admin key can change an org's plan or policy",
                reason="platform_admin_only",
            )
        chains = self._chains()
        resolved_plan, resolved = chains.resolve(org_id, plan, steps, where="policy")
        existing, op = await self._org_gateway_change(org_id, {"plan": plan, "policy": steps})
        data = {
            "plan": plan,
            "steps": steps,
            "enabled_steps": [spec.name for spec, _ in resolved],
            "previous_plan": (existing or {}).get("plan"),
        }
        event = AuditEvent(org_id=org_id, actor=who.actor, type="policy.set", data=data)
        await self._store.apply([op, AppendAudit(event)])
        return OrgPolicy(org_id=org_id, plan=resolved_plan.name, chosen_plan=plan, steps=steps)

    async def set_transcripts(
        self, who: Principal, org_id: str, content: bool, retention_days: int
    ) -> TranscriptSettings:
        """Whether the org keeps the text of its session transcripts, and for how long. The
        org's own admin decides (its data); audited."""
        await self.get_org(who, org_id)
        changes = {"transcript_content": content, "transcript_retention_days": retention_days}
        _, op = await self._org_gateway_change(org_id, changes)
        data = {"content": content, "retention_days": retention_days}
        event = AuditEvent(org_id=org_id, actor=who.actor, type="transcripts.set", data=data)
        await self._store.apply([op, AppendAudit(event)])
        return TranscriptSettings(content, retention_days)

    async def _org_gateway_change(
        self, org_id: str, changes: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, PutObject | UpdateObject]:
        """The org's current `org_gateway` record (None: it has none yet) and the operation
        that applies `changes` to it, creating it when missing."""
        existing = await self._store.get_object("org_gateway", org_id)
        changes = {**changes, "updated_at": utcnow()}
        if existing is not None:
            return existing, UpdateObject("org_gateway", org_id, changes)
        record = OrgGatewayRecord(id=org_id, org_id=org_id, **changes)
        return None, PutObject("org_gateway", record)

    async def get_transcripts(self, who: Principal, org_id: str) -> TranscriptSettings:
        await self.get_org(who, org_id)
        return await transcript_settings(self._store, org_id)

    # --- teams and users ------------------------------------------------------------------

    async def create_team(self, who: Principal, name: str) -> TeamRecord:
        team = TeamRecord(id=new_id("team"), org_id=who.org_id, name=name)
        await self._put(
            "team", team, who.org_id, who.actor, "team.created", {"id": team.id, "name": name}
        )
        return team

    async def list_teams(self, who: Principal) -> list[TeamRecord]:
        return [
            TeamRecord.model_validate(d) for d in await self._store.list_objects("team", who.org_id)
        ]

    async def create_user(
        self, who: Principal, name: str, email: str | None, team_id: str | None
    ) -> UserRecord:
        if team_id is not None:
            await self._owned("team", team_id, who, field="team_id")
        user = UserRecord(
            id=new_id("user"), org_id=who.org_id, name=name, email=email, team_id=team_id
        )
        data = {"id": user.id, "name": name, "team_id": team_id}
        await self._put("user", user, who.org_id, who.actor, "user.created", data)
        return user

    async def list_users(self, who: Principal) -> list[UserRecord]:
        return [
            UserRecord.model_validate(d) for d in await self._store.list_objects("user", who.org_id)
        ]

    # --- keys -----------------------------------------------------------------------------

    async def create_key(
        self,
        who: Principal,
        *,
        name: str,
        role: Role,
        team_id: str | None = None,
        user_id: str | None = None,
        expires_in_s: float | None = None,
        org_id: str | None = None,
        models: list[str] | None = None,
        skills: list[str] | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """The new key's record and the key itself, which is never shown again."""
        target = org_id or who.org_id
        if target != who.org_id:
            if not who.platform:
                raise NotFoundError(f"org {target} not found", field="org_id")
            if await self._store.get_object("org", target) is None:
                raise NotFoundError(f"org {target} not found", field="org_id")
        scope = Principal(org_id=target, actor=who.actor)
        if team_id is not None:
            await self._owned("team", team_id, scope, field="team_id")
        if user_id is not None:
            user = UserRecord.model_validate(
                await self._owned("user", user_id, scope, field="user_id")
            )
            team_id = team_id or user.team_id
        expires_at: datetime | None = None
        if expires_in_s is not None:
            expires_at = utcnow() + timedelta(seconds=expires_in_s)
        key_id, secret = mint_api_key()
        record = ApiKeyRecord(
            id=key_id,
            org_id=target,
            role=role,
            name=name,
            key_hash=hash_token(secret),
            team_id=team_id,
            user_id=user_id,
            created_by=who.actor,
            expires_at=expires_at,
            models=models,
            skills=skills,
        )
        data = {
            "id": key_id,
            "name": name,
            "role": role.value,
            "team_id": team_id,
            "user_id": user_id,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "models": models,
            "skills": skills,
        }
        await self._put("api_key", record, target, who.actor, "key.created", data)
        return record, secret

    async def list_keys(self, who: Principal) -> list[ApiKeyRecord]:
        docs = await self._store.list_objects("api_key", who.org_id)
        return [ApiKeyRecord.model_validate(d) for d in docs]

    async def revoke_key(self, who: Principal, key_id: str) -> ApiKeyRecord:
        key = ApiKeyRecord.model_validate(await self._owned("api_key", key_id, who, field="key_id"))
        if key.revoked_at is not None:
            return key
        now = utcnow()
        event = AuditEvent(
            org_id=who.org_id, actor=who.actor, type="key.revoked", data={"id": key_id}
        )
        await self._store.apply(
            [UpdateObject("api_key", key_id, {"revoked_at": now}), AppendAudit(event)]
        )
        return key.model_copy(update={"revoked_at": now})

    # --- internals ------------------------------------------------------------------------

    async def _owned(
        self, kind: ObjectKind, object_id: str, who: Principal, *, field: str
    ) -> dict[str, Any]:
        doc = await self._store.get_object(kind, object_id)
        if doc is None or doc.get("org_id") != who.org_id:
            raise NotFoundError(f"{kind.replace('_', ' ')} {object_id} not found", field=field)
        return doc

    async def _put(
        self,
        kind: ObjectKind,
        record: BaseModel,
        org_id: str,
        actor: str,
        event: str,
        data: dict[str, Any],
    ) -> None:
        audit = AuditEvent(org_id=org_id, actor=actor, type=event, data=data)
        await self._store.apply([PutObject(kind, record), AppendAudit(audit)])
