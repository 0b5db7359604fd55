"""Render failures on a real DuckDB file: a NULL value is retried, a variable the segment
does not have is settled (skipped ``template_variable_missing``) and never retried."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailers.config import Settings
from tests.conftest import REPO, eml_files, query, send_window_once


def with_template(root: Path, name: str, part: str, text: str) -> Callable[[dict[str, Any]], None]:
    """A config mutation pointing at a copy of the templates with one part rewritten."""
    templates = root / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / name / part).write_text(text)

    def mutate(config: dict[str, Any]) -> None:
        config["templates_dir"] = str(templates)

    return mutate


def ledger(settings: Settings, campaign: str) -> list[dict[str, Any]]:
    return query(
        settings,
        "select message_key, status, reason from mailers.send_ledger "
        f"where campaign = '{campaign}'",
    )


def test_a_variable_the_segment_lacks_settles_the_recipient_naming_it(
    core_project, tmp_path: Path
) -> None:
    body = "Hello {{ first_name | default('there') }}, your code is {{ coupon_code }}.\n"
    settings = core_project(with_template(tmp_path, "pro_tips", "body.txt", body))

    first = send_window_once(settings, "acme.pro_tips")

    rows = ledger(settings, "pro_tips")
    settled = [r for r in rows if (r["reason"] or "").startswith("template_variable_missing")]
    assert first.counts["skipped_template_variable_missing"] == len(settled) > 50
    assert first.counts["render_failed"] == 0 and first.counts["accepted"] == 0
    assert {r["status"] for r in settled} == {"skipped"}
    assert all("'coupon_code'" in r["reason"] for r in settled)
    assert all("seg_acme_active_pro" in r["reason"] for r in settled)
    assert eml_files(settings) == []

    again = send_window_once(settings, "acme.pro_tips", run_id="run-2")

    assert len(ledger(settings, "pro_tips")) == len(rows)
    assert again.counts["skipped_template_variable_missing"] == 0


def test_a_null_in_an_existing_column_stays_retryable(core_project) -> None:
    settings = core_project()

    first = send_window_once(settings, "globex.launch_newsletter", window="once")
    second = send_window_once(settings, "globex.launch_newsletter", window="once", run_id="run-2")

    assert first.counts["render_failed"] == second.counts["render_failed"] > 0
    assert first.counts["skipped_template_variable_missing"] == 0
    attempts = Counter(
        r["message_key"]
        for r in ledger(settings, "launch_newsletter")
        if r["status"] == "render_failed"
    )
    assert set(attempts.values()) == {2}


def test_mailers_variables_are_not_mistaken_for_missing_columns(
    core_project, tmp_path: Path
) -> None:
    text = "{{ plan }} from {{ workspace }}/{{ campaign }}: {{ unsubscribe_url }}\n"
    settings = core_project(with_template(tmp_path, "pro_tips", "body.txt", text))

    report = send_window_once(settings, "acme.pro_tips")

    assert report.counts["accepted"] > 50
    assert report.counts["skipped_template_variable_missing"] == 0
