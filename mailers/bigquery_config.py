"""Configuration of a BigQuery warehouse (``warehouse: {kind: bigquery, ...}``).

One member of :data:`mailers.config.WarehouseConfig`; the adapter is
:mod:`adapters.warehouses.bigquery`. Credentials are never in the file: the SDK finds
Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` naming a
service-account key file, or the metadata server, or ``gcloud auth
application-default login``) when a warehouse is opened.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[a-z0-9.-]+:[a-z][a-z0-9-]{4,28}[a-z0-9]$")
"""A project id, optionally domain-scoped (https://cloud.google.com/resource-manager/docs/creating-managing-projects)."""
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
"""Dataset names: letters, digits and underscores (https://cloud.google.com/bigquery/docs/datasets#dataset-naming)."""


class BigQueryWarehouseConfig(BaseModel):
    """A BigQuery project: each warehouse schema (``mailers``, ``mailers_work``, the segment
    schemas dbt builds) is one dataset, named ``dataset_prefix + schema`` unless
    ``datasets`` maps it to another name; new datasets are created in ``location``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["bigquery"]
    project: str = Field(description="Project that holds the datasets and is billed for jobs.")
    location: str = Field(default="US", description="Location of the datasets and of every job.")
    dataset_prefix: str = Field(default="", description="Prepended to a schema's name.")
    datasets: dict[str, str] = Field(
        default_factory=dict, description="Schema name -> dataset name, overriding the prefix."
    )
    storage_read_api: bool = Field(
        default=True,
        description="Read large query results as Arrow through the BigQuery Storage Read API "
        "(needs google-cloud-bigquery-storage); off, results page through REST.",
    )
    staging_expiration_minutes: int = Field(
        default=60,
        gt=0,
        description="Expiry of the tables that hold staged Arrow rows, should a run die first.",
    )
    job_timeout_seconds: float = Field(default=600, gt=0)
    api_endpoint: str | None = Field(
        default=None, description="REST endpoint, e.g. a local emulator's http://127.0.0.1:9050."
    )
    storage_api_endpoint: str | None = Field(
        default=None, description="Storage API gRPC host:port of an emulator (plaintext)."
    )
    anonymous: bool = Field(
        default=False, description="No credentials at all: only for a local emulator."
    )

    @field_validator("project")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not _PROJECT.match(value):
            raise ValueError(f"{value!r} is not a Google Cloud project id")
        return value

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value.values() if not _DATASET.match(name)]
        if bad:
            raise ValueError(f"not BigQuery dataset names (letters, digits, _): {bad}")
        return value

    @model_validator(mode="after")
    def _emulator_only(self) -> BigQueryWarehouseConfig:
        if self.anonymous and self.api_endpoint is None:
            raise ValueError("anonymous (no credentials) needs api_endpoint: an emulator")
        if self.dataset_prefix and not _DATASET.match(self.dataset_prefix):
            raise ValueError(f"dataset_prefix {self.dataset_prefix!r}: letters, digits, _ only")
        return self

    def dataset(self, schema: str) -> str:
        """The dataset that holds warehouse schema ``schema``."""
        return self.datasets.get(schema, self.dataset_prefix + schema)
