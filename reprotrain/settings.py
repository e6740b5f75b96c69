"""The one settings object: every REPROTRAIN_* variable, validated, built once and passed in."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of the API, the workers and the embedded server alike."""

    model_config = SettingsConfigDict(env_prefix="REPROTRAIN_", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("reprotrain-data"), description="root for the embedded defaults")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir")
    broker_url: str | None = Field(None, description="Celery broker; default kombu filesystem://")
    artifacts_dir: Path | None = None
    jobs_dir: Path | None = Field(None, description="worker-local job directories")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    access_log: bool = Field(True, description="log one line per HTTP request")
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="comma-separated"
    )
    metrics_token: SecretStr | None = Field(None, description="a token good for /metrics only (scrapers)")
    input_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="comma-separated: where inputs may lie (default data_dir/inputs)"
    )
    queues: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["default"])
    lease_s: float = Field(30.0, gt=0)
    heartbeat_s: float = Field(2.0, gt=0)
    maintenance_s: float = Field(5.0, gt=0, description="reaper/reconciler period")
    resend_after_s: float = Field(300.0, gt=0, description="re-send QUEUED jobs older than this")
    max_attempts: int = Field(3, ge=1, description="lease expiries before a job fails")
    log_format: Literal["text", "json"] = Field("text", description="server logs: plain lines or JSON lines")
    retention_days: float | None = Field(
        None,
        gt=0,
        description="delete ended jobs this old (an original with a newer re-run stays); default off",
    )
    retention_every_s: float = Field(3600.0, gt=0, description="how often the retention sweep runs")
    artifact_grace_s: float = Field(
        600.0, ge=0, description="a stored file no job holds is deleted once unused this long"
    )
    visibility_timeout_s: int = Field(12 * 3600, ge=1, description="Redis: an unacked message returns after")
    max_bundle_bytes: int = Field(100 * 2**20, ge=1024)
    max_bundle_unpacked_bytes: int = Field(1024 * 2**20, ge=1024)
    bundle_cache_bytes: int = Field(
        5 * 2**30, ge=0, description="per worker: extracted bundles kept, least recently used first out"
    )
    finish_retry_s: float = Field(
        900.0, gt=0, description="how long a worker retries storing a finished job while the database is away"
    )
    max_spec_bytes: int = Field(2**20, ge=1024, description="a submitted spec's body; larger is 413")
    max_live_log_bytes: int = Field(16 * 2**20, ge=1024, description="per stream, in the database")
    cancel_grace_s: float = Field(10.0, ge=0)
    isolation: Literal["auto", "namespaces", "userns", "none"] = Field(
        "auto", description="how jobs are confined (README, Security model); auto: the strongest available"
    )
    key_path: Path | None = Field(None, description="the worker's signing key; default data_dir/keys/")
    job_uid: int = Field(65534, ge=1, le=2**32 - 2, description="jobs run as it (root worker)")

    @field_validator("api_tokens", "queues", "input_roots", mode="before")
    @classmethod
    def _split_commas(cls, v: object) -> object:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'reprotrain.db').resolve()}"

    @property
    def broker(self) -> str:
        """The broker URL; kombu's filesystem transport named with a host, which it ignores (without
        one, kombu warns "No hostname was supplied" at every connection)."""
        url = self.broker_url or "filesystem://"
        return "filesystem://localhost//" if url in ("filesystem://", "filesystem:///") else url

    @property
    def artifacts(self) -> Path:
        return self.artifacts_dir or self.data_dir / "artifacts"

    @property
    def bundles(self) -> Path:
        return self.artifacts / "bundles"

    @property
    def jobs(self) -> Path:
        return self.jobs_dir or self.data_dir / "jobs"

    @cached_property
    def inputs_under(self) -> list[Path]:
        """The input roots, absolute: configured, or the data directory's `inputs/` (resolved
        once: every submit asks, and resolving walks every link of the path)."""
        return [p.resolve() for p in self.input_roots] or [(self.data_dir / "inputs").resolve()]

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def key_file(self) -> Path:
        """The worker's ed25519 signing key (made on first start; compose keeps it in a volume)."""
        return self.key_path or self.data_dir / "keys" / "worker-ed25519.pem"

    @property
    def private_paths(self) -> list[Path]:
        """What no job may see: the data directory (database, broker, artifacts, every job's
        directory, the bundle cache), wherever each part is configured to live."""
        paths = [self.data_dir, self.artifacts, self.jobs, self.broker_dir, self.key_file.parent]
        if self.db_url.startswith("sqlite:///"):
            paths.append(Path(self.db_url.removeprefix("sqlite:///")).parent)
        return paths

    @cached_property  # read on every request; the settings are frozen
    def loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @cached_property  # read on every request; the settings are frozen
    def auth_required(self) -> bool:
        """Tokens are required when any are configured, and always beyond loopback."""
        return bool(self.api_tokens) or not self.loopback_only

    def token_values(self) -> set[str]:
        return {t.get_secret_value() for t in self.api_tokens}


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; explicit overrides (from CLI flags) win."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
