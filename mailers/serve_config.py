"""The ``serve:`` section of the config: how ``mailers serve`` listens and lands webhooks.

Every key has a default, so a config without ``serve:`` runs a loopback receiver landing
into the local landing directory. Segments (see :mod:`adapters.serve.segments`) are closed
when they reach ``segment_max_bytes`` or ``segment_max_lines``, or are
``segment_max_age_seconds`` old (``0`` closes one after every group commit, so each
acknowledged event is visible to ingestion at once: what the demo and tests use).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LandingStoreConfig(_Strict):
    """Where acknowledged webhooks are made durable: the local landing dir, or S3.

    With ``kind: s3`` the service still answers only after the local fsync: segments are
    written in ``spool_dir`` exactly as in the landing dir, and each closed segment is
    uploaded whole as one object ``<prefix>/<kind>/<account>/<stamp>-<name>.jsonl`` (the
    stamp is when the upload started), then removed locally. A failed upload keeps the
    segment and is retried. Ingestion mirrors the objects into the local landing dir
    first (:mod:`adapters.serve.s3_mirror`). Credentials come from the environment
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile or an instance role),
    never from this file.
    """

    kind: Literal["local", "s3"] = "local"
    bucket: str | None = Field(default=None, description="S3 bucket (kind s3 only).")
    prefix: str = Field(default="landing", description="Key prefix inside the bucket.")
    region: str | None = None
    endpoint_url: str | None = Field(
        default=None, description="An S3-compatible endpoint (MinIO, a test server)."
    )
    spool_dir: str = Field(
        default="s3-spool",
        description="Where segments wait for their upload (kind s3), relative to data_dir.",
    )
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    read_timeout_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts per S3 request (botocore retries)."
    )
    retry_seconds: float = Field(
        default=5.0, gt=0, description="How often segments whose upload failed are retried."
    )
    mirror_overlap_seconds: float = Field(
        default=900.0,
        gt=0,
        description=(
            "How far before the newest object it mirrored a mirror lists again: more than "
            "the clock skew between receivers plus the longest upload (an upload that took "
            "over half of this is redone under a new key)."
        ),
    )

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> LandingStoreConfig:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("serve.landing.kind: s3 needs serve.landing.bucket")
        return self


class ServeConfig(_Strict):
    """The webhook service: address, request limits and group-commit settings."""

    host: str = "127.0.0.1"
    port: int = Field(default=8930, ge=0, le=65535)
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    body_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A body that stops arriving this long gets 408."
    )
    segment_max_bytes: int = Field(default=16 << 20, gt=0)
    segment_max_lines: int = Field(default=50_000, gt=0)
    segment_max_age_seconds: float = Field(default=5.0, ge=0)
    commit_max_lines: int = Field(
        default=4096, gt=0, description="The most payloads one group commit takes."
    )
    landing: LandingStoreConfig = Field(default_factory=LandingStoreConfig)
