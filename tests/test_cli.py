"""The `mailers` command line, run as a user runs it (a real process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from adapters.settings import load
from tests.conftest import REPO, eml_files, query, write_config


def mailers(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "mailers"
    return subprocess.run(
        [str(executable if executable.exists() else shutil.which("mailers")), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_validate_accepts_the_shipped_config() -> None:
    result = mailers("validate")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "pro_tips" in result.stdout


def test_validate_names_file_key_and_problem(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    document = yaml.safe_load(config.read_text())
    document["workspaces"]["acme"]["streams"]["lifecycle"]["routing"]["weights"]["nope"] = 1
    config.write_text(yaml.safe_dump(document))
    result = mailers("validate", "--config", str(config))
    assert result.returncode == 1
    assert (
        f"{config}: workspaces.acme.streams.lifecycle.routing: unknown provider account 'nope'"
        in result.stderr
    )

    document = yaml.safe_load(write_config(tmp_path).read_text())
    document["workspaces"]["acme"]["campaigns"]["pro_tips"]["segment"] = "seg_missing"
    config.write_text(yaml.safe_dump(document))
    result = mailers("validate", "--config", str(config))
    assert result.returncode == 1
    assert f"{config}: workspaces.acme.campaigns.pro_tips.segment: dbt segment model" in (
        result.stderr
    )
    assert "'seg_missing' does not exist" in result.stderr


def test_plan_is_a_dry_run_with_counts_and_routes(tmp_path: Path, seeded_warehouse: Path) -> None:
    settings = load(write_config(tmp_path))
    settings.warehouse_path.parent.mkdir(parents=True)
    shutil.copyfile(seeded_warehouse, settings.warehouse_path)
    result = mailers("plan", "acme.pro_tips", "--config", str(settings.path), "--window", "w1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "nothing sent" in out
    for label in (
        "segment rows",
        "skipped suppressed",
        "skipped invalid address",
        "to send",
        "via acme_sandbox_a",
        "via acme_sandbox_b",
    ):
        assert label in out
    assert query(settings, "select count(*) as n from mailers.send_ledger") == [{"n": 0}]
    assert eml_files(settings) == []


def test_plan_defaults_to_the_window_of_mailers_clock(
    tmp_path: Path, seeded_warehouse: Path
) -> None:
    settings = load(write_config(tmp_path))
    settings.warehouse_path.parent.mkdir(parents=True)
    shutil.copyfile(seeded_warehouse, settings.warehouse_path)
    result = mailers(
        "plan",
        "acme.pro_tips",
        "--config",
        str(settings.path),
        env={"MAILERS_CLOCK": "2031-01-08T12:00:00Z"},  # a Wednesday; Mondays 09:00 Berlin
    )
    assert result.returncode == 0, result.stderr
    assert "2031-01-06T08:00:00Z" in result.stdout


def test_plan_explains_what_is_missing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    unknown = mailers("plan", "acme.nope", "--config", str(config))
    assert unknown.returncode == 2
    assert "acme.pro_tips" in unknown.stderr
    unbuilt = mailers("plan", "acme.pro_tips", "--config", str(config))
    assert unbuilt.returncode == 1
    assert "segment model 'seg_acme_active_pro' is not built" in unbuilt.stderr


def test_demo_runs_end_to_end_and_prints_the_marts(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = mailers(
        "demo",
        "--config",
        str(config),
        "--contacts",
        "300",
        cwd=tmp_path,
        env={"DAGSTER_HOME": str(tmp_path / "dagster"), "MAILERS_UNSUBSCRIBE_KEY": ""},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Deliverability" in result.stdout and "acme_sandbox_b" in result.stdout
    assert "one-off key" in result.stdout
    settings = load(config)
    assert f"{len(eml_files(settings))} messages written as .eml files" in result.stdout
