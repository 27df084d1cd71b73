"""Settings shared by every Paddock process. Built once in the entry point and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CoreSettings", "DEFAULT_POLICIES_DIR"]

DEFAULT_POLICIES_DIR = Path(__file__).resolve().parent.parent / "policies"
_DEV_SECRET = "paddock-development-secret-change-me"


class CoreSettings(BaseSettings):
    """Settings both the control plane and the gateway read (env prefix `PADDOCK_`)."""

    model_config = SettingsConfigDict(env_prefix="PADDOCK_", extra="ignore")

    environment: str = Field("development", description="development | production")
    data_dir: Path = Field(Path(".paddock"), description="where the SQLite store lives")
    database_url: str | None = Field(
        None, description="sqlite:///path or mongodb://...; default: sqlite in data_dir"
    )
    redis_url: str | None = Field(None, description="counters and pub/sub; None = in-process")
    policies_dir: Path = DEFAULT_POLICIES_DIR
    secret_key: SecretStr = SecretStr(_DEV_SECRET)
    admin_key: SecretStr | None = Field(None, description="bootstrap admin API key")
    org_id: str = Field("default", description="the org of the bootstrap admin key")
    audit_signing_key: SecretStr | None = Field(
        None, description="base64 Ed25519 seed for audit checkpoints; derived in development"
    )

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> CoreSettings:
        if self.environment != "development":
            if self.secret_key.get_secret_value() in (_DEV_SECRET, ""):
                raise ValueError("PADDOCK_SECRET_KEY must be set outside development")
            if self.audit_signing_key is None:
                raise ValueError("PADDOCK_AUDIT_SIGNING_KEY must be set outside development")
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'paddock.db').resolve()}"
