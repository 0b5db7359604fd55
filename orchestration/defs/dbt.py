"""dbt wired into Dagster: one cached project, two asset groups, one translator.

The segment models (and what they read) build *before* audiences; everything else
(staging over Mailers' tables, the marts) builds *after* sends and event ingestion. Two
``@dbt_assets`` over one manifest keep that order without a cycle in the asset graph.
"""

import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from mailers.completeness import dbt_vars
from mailers.config import Settings
from orchestration.defs.dbt_profile import dbt_executable, dbt_pointed_at, dbt_target
from orchestration.defs.preflight import require_run_environment
from orchestration.defs.resources import WAREHOUSE_POOL, MailersResource

AUDIENCE_MODELS = "+path:models/segments"
"""The segment models and everything upstream of them."""


class MailersDbtTranslator(DagsterDbtTranslator):
    """Asset keys: sources as ``[source, table]``, models as ``[layer, model]``."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        fqn = dbt_resource_props["fqn"]
        layer = fqn[1] if len(fqn) > 2 else "models"
        return dg.AssetKey([layer, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        return "segments" if "segments" in fqn or "crm" in fqn else "reporting"


@cache
def project(project_dir: Path, target: str = "duckdb") -> DbtProject:
    """The dbt project, with a manifest that is current with its sources, parsed on profile
    target ``target`` (whose adapter the dbt executable has)."""
    dbt = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    if _manifest_stale(dbt):
        # Parse with our dbt (dbt_executable): the stock preparer looks for `dbt` on PATH.
        cli = DbtCliResource(
            project_dir=dbt,
            profiles_dir=str(project_dir),
            target=target,
            dbt_executable=dbt_executable(),
        )
        cli.cli(["parse", "--quiet"], target_path=dbt.target_path).wait()
    return dbt


def _manifest_stale(dbt: DbtProject) -> bool:
    manifest = dbt.manifest_path
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [*dbt.project_dir.glob("*.yml"), *dbt.project_dir.glob("models/**/*")]
    sources += list(dbt.project_dir.glob("macros/**/*"))
    return any(path.stat().st_mtime > built for path in sources if path.is_file())


def _build(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, mailers: MailersResource
) -> Iterator[Any]:
    settings = mailers.settings()
    build_vars = json.dumps(dbt_vars(settings.config.completeness))
    with dbt_pointed_at(settings):  # dbt.cli starts the process
        invocation = dbt.cli(["build", "--vars", build_vars], context=context)
    yield from invocation.stream()


def dbt_definitions(settings: Settings) -> dg.Definitions:
    """The two dbt asset groups and the dbt resource, for the configured project."""
    with dbt_pointed_at(settings):
        dbt_project = project(settings.dbt_project_dir, dbt_target(settings))
    translator = MailersDbtTranslator()

    @dbt_assets(
        manifest=dbt_project.manifest_path,
        project=dbt_project,
        select=AUDIENCE_MODELS,
        dagster_dbt_translator=translator,
        name="audience_dbt_models",
        pool=WAREHOUSE_POOL,
    )
    def audience_dbt_models(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, mailers: MailersResource
    ) -> Iterator[Any]:
        """Segment models: who each campaign may reach."""
        # The first step of send jobs and the pipeline: nothing runs if a secret is missing.
        require_run_environment(context, mailers.settings())
        yield from _build(context, dbt, mailers)

    @dbt_assets(
        manifest=dbt_project.manifest_path,
        project=dbt_project,
        exclude=AUDIENCE_MODELS,
        dagster_dbt_translator=translator,
        name="reporting_dbt_models",
        pool=WAREHOUSE_POOL,
    )
    def reporting_dbt_models(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, mailers: MailersResource
    ) -> Iterator[Any]:
        """Staging and marts over the ledger, events, suppressions and audit log."""
        yield from _build(context, dbt, mailers)

    return dg.Definitions(
        assets=[audience_dbt_models, reporting_dbt_models],
        resources={
            "dbt": DbtCliResource(
                project_dir=dbt_project,
                profiles_dir=str(dbt_project.project_dir),
                target=dbt_target(settings),
                dbt_executable=dbt_executable(),
            )
        },
    )
