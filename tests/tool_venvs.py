"""The test tools' own virtualenvs (``tests/tool_venv.sh``): bqemulator and dbt-snowflake,
each run as a separate process because its pins cannot share the main venv.

``make test`` builds them first; a test session builds one on first use, under a file lock
so two xdist workers do not both build it.
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "tool_venv.sh"


def venv_dir(tool: str) -> Path:
    """Where ``tool``'s virtualenv lives: ``<repo>/.venv-<tool>``."""
    return REPO / f".venv-{tool}"


def ensure_tool(tool: str, executable: str) -> Path:
    """``tool``'s virtualenv, created or brought up to its pins if need be; the path of its
    ``executable``. :class:`subprocess.CalledProcessError` (with the script's stderr) when
    it cannot be built."""
    venv = venv_dir(tool)
    with (REPO / f".venv-{tool}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(
            ["sh", str(SCRIPT), tool, str(venv)], check=True, capture_output=True, text=True
        )
    return venv / "bin" / executable
