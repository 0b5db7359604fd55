"""Secret references: config files name an environment variable, never hold a secret.

The environment is read here, when a secret is needed, never at import time; a missing
variable raises :class:`~mailers.errors.SecretMissing` naming the variable (and where the
config asked for it), never a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from mailers.errors import SecretMissing

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SecretRef(BaseModel):
    """``{env: NAME}`` in the config file: the secret is the value of env var ``NAME``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field(pattern=_ENV_NAME, description="Name of the environment variable.")

    def resolve(self, used_for: str, environ: Mapping[str, str] | None = None) -> str:
        """Return the secret's value, or raise naming the variable and what needs it."""
        source = os.environ if environ is None else environ
        value = source.get(self.env)
        if not value:
            raise SecretMissing(
                f"environment variable {self.env} is not set (needed for {used_for})"
            )
        return value

    def __repr__(self) -> str:
        return f"SecretRef(env={self.env!r})"
