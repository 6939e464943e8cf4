"""One settings object for every process, read from the environment (and flags that override it)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_WEBHOOK_SECRET = "dev-webhook-secret"
Port = Annotated[int, Field(ge=1, le=65535)]
DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://")


class Settings(BaseSettings):
    """Every knob the engine reads. Environment variables are the names in `validation_alias`."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    data_dir: Path = Field(Path(".crisis"), validation_alias="CRISIS_DATA_DIR")
    # Empty means "an SQLite file in the data directory".
    database_url: str = Field("", validation_alias="CRISIS_DATABASE_URL")

    temporal_address: str = Field("127.0.0.1:7233", validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", validation_alias="TEMPORAL_NAMESPACE")
    temporal_ui_port: Port = Field(8233, validation_alias="TEMPORAL_UI_PORT")
    task_queue: str = Field("crisis", validation_alias="CRISIS_TASK_QUEUE")
    # Publish CrisisPlaybook/CrisisState/CrisisLevel search attributes. The namespace must have
    # them registered: `crisis up` starts its server with them and turns this on; a cluster
    # registers them once (README).
    search_attributes: bool = Field(False, validation_alias="CRISIS_SEARCH_ATTRIBUTES")

    # Workers re-import the interpreter module for every run so the workflow sandbox can refuse
    # non-deterministic calls in it: slower, for tests and for trying out interpreter changes.
    strict_workflow_sandbox: bool = Field(False, validation_alias="CRISIS_STRICT_WORKFLOW_SANDBOX")
    # How long a commander action (stand-down, approval, ...) waits for the incident to take and
    # answer it; a busy worker delays it, and only past this is the action reported as unanswered.
    action_timeout_s: float = Field(60.0, gt=0, validation_alias="CRISIS_ACTION_TIMEOUT")

    api_host: str = Field("127.0.0.1", validation_alias="CRISIS_API_HOST")
    api_port: Port = Field(8000, validation_alias="CRISIS_API_PORT")
    # The API process also runs a worker so that triggers can start eagerly (no server round trip
    # before the first lever); turn off where API and workers are scaled separately.
    api_embedded_worker: bool = Field(True, validation_alias="CRISIS_API_EMBEDDED_WORKER")

    sandbox_host: str = Field("127.0.0.1", validation_alias="CRISIS_SANDBOX_HOST")
    sandbox_port: Port = Field(8100, validation_alias="CRISIS_SANDBOX_PORT")

    # Platform connectors: empty means "the local sandbox".
    recommender_url: str = Field("", validation_alias="CRISIS_RECOMMENDER_URL")
    detection_url: str = Field("", validation_alias="CRISIS_DETECTION_URL")
    moderation_url: str = Field("", validation_alias="CRISIS_MODERATION_URL")
    notify_url: str = Field("", validation_alias="CRISIS_NOTIFY_URL")
    livestream_url: str = Field("", validation_alias="CRISIS_LIVESTREAM_URL")
    hashes_url: str = Field("", validation_alias="CRISIS_HASHES_URL")
    ads_url: str = Field("", validation_alias="CRISIS_ADS_URL")
    accounts_url: str = Field("", validation_alias="CRISIS_ACCOUNTS_URL")
    search_url: str = Field("", validation_alias="CRISIS_SEARCH_URL")
    warnings_url: str = Field("", validation_alias="CRISIS_WARNINGS_URL")
    # Sent as the Authorization header on every platform call when set.
    platform_token: str = Field("", validation_alias="CRISIS_PLATFORM_TOKEN")
    platform_timeout_s: float = Field(5.0, validation_alias="CRISIS_PLATFORM_TIMEOUT")
    webhook_secret: str = Field(DEV_WEBHOOK_SECRET, validation_alias="CRISIS_WEBHOOK_SECRET")
    # E-mail notification channels go through this SMTP relay; no host = e-mail channels fail
    # with a configuration error (docs/notifications.md).
    smtp_host: str = Field("", validation_alias="CRISIS_SMTP_HOST")
    smtp_port: Port = Field(587, validation_alias="CRISIS_SMTP_PORT")
    smtp_starttls: bool = Field(True, validation_alias="CRISIS_SMTP_STARTTLS")
    smtp_username: str = Field("", validation_alias="CRISIS_SMTP_USERNAME")
    smtp_password: SecretStr = Field(SecretStr(""), validation_alias="CRISIS_SMTP_PASSWORD")
    smtp_from: str = Field("", validation_alias="CRISIS_SMTP_FROM")
    smtp_timeout_s: float = Field(10.0, validation_alias="CRISIS_SMTP_TIMEOUT")
    # PEM bundle of CAs to trust for STARTTLS instead of the system's (a relay with a private CA).
    smtp_ca_file: str = Field("", validation_alias="CRISIS_SMTP_CA_FILE")
    pagerduty_events_url: str = Field(
        "https://events.pagerduty.com/v2/enqueue", validation_alias="CRISIS_PAGERDUTY_EVENTS_URL"
    )
    # In production the development defaults of secrets are refused.
    environment: Literal["development", "production"] = Field(
        "development", validation_alias="CRISIS_ENV"
    )

    # The engine's Ed25519 key that seals audit chains; empty = `signing-key.pem` in the data
    # directory, created on first use. Every worker of a deployment must share one key.
    signing_key: str = Field("", validation_alias="CRISIS_SIGNING_KEY")
    playbooks_dir: Path = Field(
        Path(__file__).resolve().parent.parent / "playbooks",
        validation_alias="CRISIS_PLAYBOOKS_DIR",
    )
    log_format: Literal["console", "json"] = Field("console", validation_alias="CRISIS_LOG_FORMAT")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", validation_alias="CRISIS_LOG_LEVEL"
    )

    @field_validator("database_url")
    @classmethod
    def _a_store_the_engine_can_open(cls, value: str) -> str:
        if value and not value.startswith(DATABASE_SCHEMES):
            raise ValueError(
                "the audit store is SQLite (sqlite:///PATH) or PostgreSQL (postgresql://...)"
            )
        if value:
            from sqlalchemy.engine import make_url  # only when one is set: most commands read none

            try:
                make_url(value)
            except ValueError as error:  # a port that is no number, say
                raise ValueError(f"not a database URL: {error}") from None
        return value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _no_development_secrets_in_production(self) -> Settings:
        if self.environment == "production" and self.webhook_secret == DEV_WEBHOOK_SECRET:
            raise ValueError("CRISIS_WEBHOOK_SECRET must be set when CRISIS_ENV=production")
        return self

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.sandbox_host}:{self.sandbox_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'audit.db').resolve()}"

    @property
    def signing_key_path(self) -> Path:
        return Path(self.signing_key) if self.signing_key else self.data_dir / "signing-key.pem"

    @property
    def temporal_db_file(self) -> Path:
        return self.data_dir / "temporal.db"

    def connector_url(self, connector: str) -> str:
        """Base URL of a platform connector (`recommender`, `detection`, ...)."""
        configured = getattr(self, f"{connector}_url")
        return (configured or f"{self.sandbox_url}/{connector}").rstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
