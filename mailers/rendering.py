"""Rendering a campaign's template for one recipient.

A template is a directory under the templates dir holding three Jinja2 files:
``subject.txt``, ``body.html`` (autoescaped) and ``body.txt``. Undefined variables are
errors (``StrictUndefined``): a recipient whose row lacks a variable the template uses
fails alone, with the reason recorded, and the rest of the batch goes on. A NULL column
counts as missing, so ``{{ first_name | default("there") }}`` is how a template opts in
to a fallback.

A failure caused by an undefined top-level variable names it (:attr:`RenderFailure.variable`),
so the caller can tell a NULL in an existing column (data, which may change) from a variable
the row does not have at all (the template and the segment disagree, which will not).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from mailers.errors import ConfigError

TEMPLATE_PARTS = ("subject.txt", "body.html", "body.txt")

_UNDEFINED = re.compile(r"'(?P<name>[A-Za-z_][A-Za-z0-9_]*)' is undefined")
"""Jinja's message for a name the context lacks (``StrictUndefined``)."""


def undefined_variable(message: str) -> str | None:
    """The variable an undefined-variable render error (or its recorded reason) names."""
    match = _UNDEFINED.search(message)
    return match.group("name") if match else None


@dataclass(frozen=True, slots=True)
class RenderedContent:
    """The three rendered parts of one message."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class RenderFailure:
    """Why one recipient's message could not be rendered."""

    reason: str
    variable: str | None = None
    """The undefined top-level variable that failed the render, when that was the cause."""


def _environment(templates_dir: Path, *, autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=False,
        auto_reload=False,
    )


class CampaignTemplate:
    """The compiled parts of one template; compile errors surface at load, naming the file."""

    def __init__(self, templates_dir: Path, name: str) -> None:
        self.name = name
        directory = templates_dir / name
        if not directory.is_dir():
            raise ConfigError(f"template {name!r}: directory {directory} does not exist")
        missing = [part for part in TEMPLATE_PARTS if not (directory / part).is_file()]
        if missing:
            raise ConfigError(f"template {name!r}: missing {', '.join(missing)} in {directory}")
        text_env = _environment(templates_dir, autoescape=False)
        html_env = _environment(templates_dir, autoescape=True)
        self._parts: dict[str, jinja2.Template] = {}
        referenced: set[str] = set()
        for part in TEMPLATE_PARTS:
            env = html_env if part.endswith(".html") else text_env
            try:
                self._parts[part] = env.get_template(f"{name}/{part}")
                source = (directory / part).read_text()
                referenced |= jinja2.meta.find_undeclared_variables(env.parse(source))
            except jinja2.TemplateSyntaxError as err:
                raise ConfigError(
                    f"template {name!r}: {directory / part}, line {err.lineno}: {err.message}"
                ) from err
        self.variables: frozenset[str] = frozenset(referenced - set(text_env.globals))
        """Every top-level variable the parts refer to, guarded (``is defined``) or not."""

    def render(self, variables: Mapping[str, Any]) -> RenderedContent | RenderFailure:
        """Render all three parts, or say which part failed and why."""
        context = {key: value for key, value in variables.items() if value is not None}
        rendered: dict[str, str] = {}
        for part, template in self._parts.items():
            try:
                rendered[part] = template.render(context)
            except jinja2.UndefinedError as err:
                message = err.message or str(err)
                return RenderFailure(
                    f"template {self.name}/{part}: {message}", undefined_variable(message)
                )
            except Exception as err:  # a filter or expression failing on this row's data
                return RenderFailure(f"template {self.name}/{part}: {type(err).__name__}: {err}")
        subject = " ".join(rendered["subject.txt"].split())
        if not subject:
            return RenderFailure(f"template {self.name}/subject.txt rendered empty")
        return RenderedContent(
            subject=subject, html=rendered["body.html"], text=rendered["body.txt"]
        )
