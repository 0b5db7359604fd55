"""Rendering one recipient's message: strict variables, per-row failures, safe HTML."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailers.errors import ConfigError
from mailers.rendering import (
    CampaignTemplate,
    RenderedContent,
    RenderFailure,
    undefined_variable,
)


def write_template(root: Path, name: str, *, subject: str, html: str, text: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "subject.txt").write_text(subject)
    (directory / "body.html").write_text(html)
    (directory / "body.txt").write_text(text)
    return root


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    write_template(
        root,
        "welcome",
        subject="Welcome, {{ first_name }}!\n",
        html="<p>Hello {{ first_name }}, your plan is {{ plan }}.</p>\n",
        text="Hello {{ first_name }}, your plan is {{ plan }}.\n",
    )
    return root


def rendered(result: RenderedContent | RenderFailure) -> RenderedContent:
    assert isinstance(result, RenderedContent), result
    return result


def failure(result: RenderedContent | RenderFailure) -> RenderFailure:
    assert isinstance(result, RenderFailure), result
    return result


def test_renders_subject_html_and_text(templates: Path) -> None:
    template = CampaignTemplate(templates, "welcome")

    content = rendered(template.render({"first_name": "Ann", "plan": "pro"}))

    assert content.subject == "Welcome, Ann!"
    assert content.html == "<p>Hello Ann, your plan is pro.</p>"
    assert content.text == "Hello Ann, your plan is pro."


def test_extra_variables_are_ignored(templates: Path) -> None:
    template = CampaignTemplate(templates, "welcome")

    content = rendered(template.render({"first_name": "Ann", "plan": "pro", "unused": 1}))

    assert content.subject == "Welcome, Ann!"


def test_html_part_escapes_variables_but_text_part_does_not(templates: Path) -> None:
    template = CampaignTemplate(templates, "welcome")
    hostile = "<script>alert('x')</script>"

    content = rendered(template.render({"first_name": hostile, "plan": "a & b"}))

    assert "<script>" not in content.html
    assert "&lt;script&gt;" in content.html
    assert "a &amp; b" in content.html
    assert hostile in content.text
    assert "a & b" in content.text


def test_missing_variable_fails_naming_variable_and_part(tmp_path: Path) -> None:
    root = write_template(
        tmp_path,
        "t",
        subject="Hi",
        html="<p>{{ plan }} {{ coupon_code }}</p>",
        text="{{ plan }}",
    )
    template = CampaignTemplate(root, "t")

    result = failure(template.render({"plan": "pro"}))

    assert "coupon_code" in result.reason
    assert "t/body.html" in result.reason
    assert result.variable == "coupon_code"


def test_missing_variable_in_subject_names_the_subject(templates: Path) -> None:
    template = CampaignTemplate(templates, "welcome")

    result = failure(template.render({"plan": "pro"}))

    assert "first_name" in result.reason
    assert "welcome/subject.txt" in result.reason


def test_none_value_counts_as_missing(templates: Path) -> None:
    template = CampaignTemplate(templates, "welcome")

    result = failure(template.render({"first_name": None, "plan": "pro"}))

    assert "first_name" in result.reason
    assert result.variable == "first_name"


def test_default_filter_covers_a_none_value(tmp_path: Path) -> None:
    root = write_template(
        tmp_path,
        "t",
        subject='Hi {{ first_name | default("there") }}',
        html='<p>{{ first_name | default("there") }}</p>',
        text='{{ first_name | default("there") }}',
    )
    template = CampaignTemplate(root, "t")

    content = rendered(template.render({"first_name": None}))
    named = rendered(template.render({"first_name": "Ann"}))

    assert (content.subject, content.html, content.text) == ("Hi there", "<p>there</p>", "there")
    assert named.subject == "Hi Ann"


def test_an_error_in_an_expression_fails_only_that_row(tmp_path: Path) -> None:
    root = write_template(
        tmp_path,
        "t",
        subject="Your {{ seats }} seats",
        html="<p>{{ '%d' % seats }}</p>",
        text="{{ 100 // seats }} per seat",
    )
    template = CampaignTemplate(root, "t")

    bad_type = failure(template.render({"seats": "many"}))
    bad_value = failure(template.render({"seats": 0}))
    fine = rendered(template.render({"seats": 4}))

    assert "t/body.html" in bad_type.reason
    assert "TypeError" in bad_type.reason
    assert "t/body.txt" in bad_value.reason
    assert "ZeroDivisionError" in bad_value.reason
    assert fine.text == "25 per seat"


def test_an_empty_subject_is_a_failure(tmp_path: Path) -> None:
    root = write_template(tmp_path, "t", subject="  {{ headline }}  \n", html="<p>x</p>", text="x")
    template = CampaignTemplate(root, "t")

    result = failure(template.render({"headline": "   "}))

    assert "subject" in result.reason
    assert "empty" in result.reason


def test_subject_whitespace_is_collapsed_to_one_line(tmp_path: Path) -> None:
    root = write_template(
        tmp_path,
        "t",
        subject="\n  Big   news\n\tfor {{ name }}  \n\n",
        html="<p>x</p>",
        text="x",
    )
    template = CampaignTemplate(root, "t")

    assert rendered(template.render({"name": "Ann\nLee"})).subject == "Big news for Ann Lee"


def test_bodies_keep_their_line_breaks(tmp_path: Path) -> None:
    root = write_template(
        tmp_path, "t", subject="s", html="<p>a</p>\n<p>b</p>\n", text="line 1\n\nline 2\n"
    )

    content = rendered(CampaignTemplate(root, "t").render({}))

    assert content.text == "line 1\n\nline 2"
    assert content.html == "<p>a</p>\n<p>b</p>"


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*does not exist"):
        CampaignTemplate(tmp_path, "nope")


def test_missing_part_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "subject.txt").write_text("s")

    with pytest.raises(ConfigError, match=r"missing body\.html, body\.txt"):
        CampaignTemplate(tmp_path, "t")


def test_syntax_error_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    root = write_template(tmp_path, "t", subject="s", html="<p>ok</p>", text="a\nb\n{{ x }\n")

    with pytest.raises(ConfigError) as info:
        CampaignTemplate(root, "t")

    assert f"{root / 't' / 'body.txt'}, line 3" in str(info.value)


def test_template_sees_changes_only_when_reloaded(tmp_path: Path) -> None:
    root = write_template(tmp_path, "t", subject="v1", html="<p>x</p>", text="x")
    template = CampaignTemplate(root, "t")
    (root / "t" / "subject.txt").write_text("v2")

    assert rendered(template.render({})).subject == "v1"
    assert rendered(CampaignTemplate(root, "t").render({})).subject == "v2"


def test_a_failure_not_caused_by_an_undefined_variable_names_none(tmp_path: Path) -> None:
    root = write_template(
        tmp_path,
        "t",
        subject="{{ seats | int // divisor }}",
        html="{{ user.name }}",
        text="x",
    )
    template = CampaignTemplate(root, "t")

    by_zero = failure(template.render({"seats": 3, "divisor": 0, "user": {}}))
    no_attribute = failure(template.render({"seats": 3, "divisor": 1, "user": {}}))

    assert by_zero.variable is None and "ZeroDivisionError" in by_zero.reason
    assert no_attribute.variable is None and "has no attribute 'name'" in no_attribute.reason


def test_undefined_variable_reads_the_name_back_from_a_recorded_reason() -> None:
    assert undefined_variable("template t/body.html: 'coupon' is undefined") == "coupon"
    assert undefined_variable("template t/body.html: 'dict object' has no attribute 'x'") is None
    assert undefined_variable("rate limited (429)") is None


def test_variables_lists_what_the_parts_refer_to_guarded_or_not(tmp_path: Path) -> None:
    root = write_template(
        tmp_path,
        "t",
        subject="{{ first_name }} {% for i in range(2) %}{{ i }}{% endfor %}",
        html="{% set hi = 'hi' %}{{ hi }} {% if country is defined %}{{ country }}{% endif %}",
        text="{{ plan | title }} {{ unsubscribe_url }}",
    )

    variables = CampaignTemplate(root, "t").variables

    assert variables == {"first_name", "country", "plan", "unsubscribe_url"}
