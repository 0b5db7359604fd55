"""The dbt project works on its own, from ``dbt_project/`` of a fresh clone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from orchestration.defs.dbt_profile import DUCKDB_PATH_ENV, dbt_executable
from tests.conftest import REPO


def test_dbt_docs_generate_works_from_a_fresh_clone_without_any_variable(tmp_path: Path) -> None:
    clone = tmp_path / "clone" / "dbt_project"
    shutil.copytree(REPO / "dbt_project", clone, ignore=shutil.ignore_patterns("target", "logs"))
    env = {k: v for k, v in os.environ.items() if k != DUCKDB_PATH_ENV}
    env.update(HOME=str(tmp_path), DO_NOT_TRACK="1")

    completed = subprocess.run(
        [dbt_executable(), "docs", "generate"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert (clone / "target" / "catalog.json").is_file()
    assert (clone / "target" / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clone"]
