"""`mailers audit` as a user runs it (a real process), on the warehouse that real Dagster
send runs left: the chains verify, tampering is named, an exported head catches a rewrite,
and an identity change made only in the config file shows up in `audit changes`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mailers.clock import FixedClock, use_clock
from mailers.config import Settings
from orchestration.defs.runs import SEND_WINDOW_TAG
from tests.conftest import write_config
from tests.core.test_audit_chain import rewrite_chain_from, rows_of
from tests.test_cli import mailers
from tests.test_run_windows import CURRENT, WEDNESDAY, failures, run


@pytest.fixture(autouse=True)
def clock() -> Iterator[FixedClock]:
    with use_clock(FixedClock(WEDNESDAY)) as fixed:
        yield fixed


def changes(settings: Settings, *args: str) -> list[dict[str, Any]]:
    done = mailers("audit", "changes", "--json", "-c", str(settings.path), *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def new_from_address(config: dict[str, Any]) -> None:
    config["workspaces"]["acme"]["identities"]["acme_news"]["from_address"] = "hello@news.acme.test"


def test_an_identity_change_made_only_in_the_config_shows_up_in_audit_changes(
    tmp_path: Path, core_project: Callable[..., Settings]
) -> None:
    settings = core_project()
    first = run(settings, {SEND_WINDOW_TAG: CURRENT})
    assert first.success, failures(first)
    baseline = changes(settings)
    assert baseline and {c["change"] for c in baseline} == {"baseline"}
    assert {c["run_id"] for c in baseline} == {first.run_id}

    unchanged = run(settings, {SEND_WINDOW_TAG: CURRENT})
    assert unchanged.success, failures(unchanged)
    assert changes(settings) == baseline

    write_config(tmp_path, new_from_address)
    edited = run(settings, {SEND_WINDOW_TAG: CURRENT})
    assert edited.success, failures(edited)

    found = [c for c in changes(settings, "--workspace", "acme") if c["run_id"] == edited.run_id]
    assert {(c["subject_name"], c["field"], c["before"], c["after"]) for c in found} == {
        ("acme_news", "from_address", '"news@news.acme.test"', '"hello@news.acme.test"')
    }
    # Every change was detected on the pinned clock's day; none since the day after it.
    day_after = (WEDNESDAY + timedelta(days=1)).date().isoformat()
    assert changes(settings, "--since", day_after) == []
    table = mailers("audit", "changes", "-c", str(settings.path), "--workspace", "acme")
    assert table.returncode == 0, table.stderr
    assert "hello@news.acme.test" in table.stdout and "from_address" in table.stdout

    verified = mailers("audit", "verify", "-c", str(settings.path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    lines = verified.stdout.splitlines()
    acme_rows = len(rows_of(settings.warehouse_path, "acme"))
    acme_head = rows_of(settings.warehouse_path, "acme")[-1]["row_hash"]
    assert f"OK  workspace acme  rows {acme_rows}  head seq {acme_rows}  {acme_head}" in lines
    assert any(line.startswith("OK  workspace globex  rows ") for line in lines)


def test_verify_names_the_first_broken_row_and_head_export_catches_a_rewrite(
    tmp_path: Path, core_project: Callable[..., Settings]
) -> None:
    settings = core_project()
    for _ in range(2):
        result = run(settings, {SEND_WINDOW_TAG: CURRENT})
        assert result.success, failures(result)
    config = str(settings.path)
    ok = mailers("audit", "verify", "-c", config, "--workspace", "acme")
    assert ok.returncode == 0, ok.stderr
    exported = mailers("audit", "head", "--json", "-c", config)
    assert exported.returncode == 0, exported.stderr
    heads_file = tmp_path / "heads.json"
    heads_file.write_text(exported.stdout)
    heads = json.loads(exported.stdout)["heads"]
    acme = rows_of(settings.warehouse_path, "acme")
    assert heads["acme"] == {
        "seq": len(acme),
        "row_hash": acme[-1]["row_hash"],
        "audit_id": acme[-1]["audit_id"],
    }
    assert mailers("audit", "verify", "--against", str(heads_file), "-c", config).returncode == 0

    rewrite_chain_from(settings.warehouse_path, 1)

    plain = mailers("audit", "verify", "-c", config)
    assert plain.returncode == 0, plain.stderr  # a thorough rewrite fools the chain alone
    against = mailers("audit", "verify", "--against", str(heads_file), "-c", config)
    assert against.returncode == 1
    assert "REWRITTEN workspace acme" in against.stderr
    assert f"rewritten at or before seq {len(acme)}" in against.stderr

    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(
            "update mailers.audit_log set counts = '{}' where workspace = 'acme' and seq = 2"
        )
    broken = mailers("audit", "verify", "-c", config)
    assert broken.returncode == 1
    assert (
        f"BROKEN workspace acme: first broken row seq 2, audit_id {acme[1]['audit_id']}: edited"
        in " ".join(broken.stderr.split())
    )
    refused = mailers("audit", "head", "--json", "-c", config)
    assert refused.returncode == 1 and "acme" in refused.stderr and not refused.stdout
