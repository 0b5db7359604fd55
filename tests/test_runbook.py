"""``docs/runbook.md`` works as written: every command and query in it is run, in order.

The project is the sandbox example on a copy of the seeded warehouse. Each ``sh`` block's
lines run in a shell as an on-call would type them (``MAILERS_CONFIG`` exported, the venv's
``mailers`` on the path) and must succeed; the ``yaml`` block is launched as the
``pause_or_resume`` job's run config; each ``sql`` block runs against the warehouse. Right
after the first block (the pause) a send of ``acme.pro_tips`` runs through Dagster, so the
queries and commands that follow have a paused window, suppressions and audit rows to show.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.clock import FixedClock, use_clock
from mailers.config import Settings
from orchestration.defs.build import build_definitions
from tests.conftest import REPO
from tests.test_pause_cli import IN_WINDOW, _send
from tests.test_pause_cli import settings as settings  # the project fixture

RUNBOOK = REPO / "docs" / "runbook.md"
BLOCK = re.compile(r"^ *```(\w+)\n(.*?)^ *```", re.S | re.M)


@pytest.fixture(autouse=True)
def _in_window() -> Iterator[None]:
    with use_clock(FixedClock(IN_WINDOW)):
        yield


def blocks() -> list[tuple[str, str]]:
    """The runbook's fenced blocks, in order: (language, text)."""
    found = [(m.group(1), m.group(2)) for m in BLOCK.finditer(RUNBOOK.read_text())]
    return [(lang, textwrap.dedent(text)) for lang, text in found]


def run_shell(line: str, settings: Settings, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MAILERS_CONFIG": str(settings.path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_every_command_and_query_of_the_runbook_works_in_order(
    settings: Settings, tmp_path: Path
) -> None:
    found = blocks()
    commands = [line for lang, text in found if lang == "sh" for line in text.splitlines()]
    assert len(commands) >= 14 and all(c.startswith("mailers ") for c in commands), commands
    assert {lang for lang, _ in found} == {"sh", "yaml", "sql"}
    outputs: list[str] = []
    sent_paused = False
    for lang, text in found:
        if lang == "sh":
            for line in text.splitlines():
                done = run_shell(line, settings, tmp_path)
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
                outputs.append(f"$ {line}\n{done.stdout}")
            if not sent_paused:
                # The send the pause just written holds: nothing of acme.lifecycle leaves.
                result = _send(settings)
                assert not result.success
                sent_paused = True
        elif lang == "yaml":
            job = build_definitions(str(settings.path)).resolve_job_def("pause_or_resume")
            launched = job.execute_in_process(
                run_config=yaml.safe_load(text), instance=dg.DagsterInstance.ephemeral()
            )
            assert launched.success
        else:
            with DuckDBWarehouse(settings.warehouse_path, read_only=True) as warehouse:
                rows = warehouse.query(text.rstrip().rstrip(";")).to_pylist()
            assert rows, f"the runbook's query found nothing:\n{text}"
            outputs.append(f"sql: {len(rows)} rows")
    transcript = "\n".join(outputs)
    # What the on-call reads at each step.
    assert "paused" in transcript and "complaint spike" in transcript
    assert "account:acme.acme_sandbox_a" in transcript  # the launchpad pause
    assert "ticket 4711" in transcript and "ticket 4712" in transcript
    assert "resumed stream acme.lifecycle" in transcript
    assert "OK" in transcript and "baseline" in transcript
    assert (tmp_path / "audit-heads.json").exists()
