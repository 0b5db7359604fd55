"""Shared fixtures: a project copy in a temp dir, seeded DuckDB warehouses, send helpers.

Time: the suite runs on Mailers' clock as the environment sets it (``MAILERS_CLOCK`` to run
the whole suite, and the processes it starts, on another date); a test that needs time to
stand still takes ``fixed_clock``; a test that leaves another clock installed fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from adapters import demo_data
from adapters.providers.registry import build_providers
from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers import clock
from mailers.audience import AudienceSpec, resolve
from mailers.config import Settings, WarehouseConfig
from mailers.ledger import LedgerContext, LedgerWriter
from mailers.providers import Provider
from mailers.sending import CampaignSender, SendContext, SendReport
from mailers.tables import ensure_tables
from mailers.warehouse import Warehouse

from .bigquery_emulator import BigQueryEmulator, ensure_venv, running_emulator
from .postgres_server import PASSWORD_ENV, PostgresServer, binaries, running_server

REPO = Path(__file__).resolve().parents[1]
SANDBOX_CONFIG = REPO / "examples" / "sandbox.yaml"
"""The sandbox-only example config every pipeline test builds on."""
UNSUBSCRIBE_KEY = "test-unsubscribe-key"


SHARED_FIXTURE_MODULES = frozenset(
    {
        "tests/test_pipeline.py",
        "tests/test_pipeline_engines.py",
        "tests/test_local_providers.py",
        "tests/test_ledger_parity.py",
    }
)
"""Modules whose tests read one expensive module-scoped fixture: each runs on one worker."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's `load`, except that each module of :data:`SHARED_FIXTURE_MODULES` is
    one unit of work, so its fixture is built once. (``--dist loadgroup`` would read
    ``xdist_group`` marks, but xdist 3.8 cannot rename pytest 9's node ids, so it groups
    nothing.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SHARED_FIXTURE_MODULES else nodeid

    return SharedFixtureScheduling(config, log)


def pytest_report_header() -> str:
    value = os.environ.get(clock.CLOCK_ENV)
    source = f"{clock.CLOCK_ENV}={value}" if value else "the system clock"
    return f"mailers clock: {source} (now {clock.now():%Y-%m-%dT%H:%M:%SZ})"


@pytest.fixture(autouse=True)
def _suite_clock() -> Iterator[None]:
    """Each test runs on the clock in force when it starts (the environment's, or a module
    fixture's) and must leave that clock installed."""
    expected = clock.current()
    yield
    left = clock.set_clock(expected)
    assert left is expected, f"the test left Mailers' clock set to {left!r}"


@pytest.fixture
def fixed_clock() -> Iterator[clock.FixedClock]:
    """Mailers' clock stopped at the suite's current instant (move it with set/advance)."""
    with clock.use_clock(clock.FixedClock(clock.now())) as pinned:
        yield pinned


@pytest.fixture(scope="session", autouse=True)
def _default_signals() -> None:
    """SIGINT and SIGTERM not ignored, even when the runner started pytest with them ignored
    (a background job): an in-process Dagster run copies SIGINT's handler onto SIGTERM as it
    ends, and every process a later test starts inherits an ignored SIGTERM (then the log
    tails of `mailers demo` outlive it and hold its output open)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session", autouse=True)
def _environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The env a user would export; dbt telemetry off. ``DAGSTER_HOME`` is this session's
    own copy of the shipped instance config (as ``make`` exports it), so parallel workers
    never share an instance's storage or its pool slots."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copyfile(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAILERS_UNSUBSCRIBE_KEY", UNSUBSCRIBE_KEY)
        patch.setenv("DO_NOT_TRACK", "1")
        patch.setenv("DAGSTER_HOME", str(home))
        patch.delenv("MAILERS_CONFIG", raising=False)
        patch.delenv("MAILERS_DATA_DIR", raising=False)
        yield


@pytest.fixture(scope="session", autouse=True)
def _dbt_manifest(_environment: None) -> None:
    """The project's manifest, parsed once under a lock before any test loads definitions.

    Parallel workers (pytest-xdist) share ``dbt_project/target``: unlocked, two workers of a
    fresh clone both find no manifest and parse at once, and one reads the other's
    half-written ``manifest.json``. Once it is current nobody rewrites it: Dagster's dbt runs
    use a target path of their own, and :func:`run_dbt` one per worker."""
    from filelock import FileLock  # a dependency of Dagster's

    from orchestration.defs.dbt import project

    target = REPO / "dbt_project" / "target"
    target.mkdir(parents=True, exist_ok=True)
    with FileLock(target / ".pytest-parse.lock"):
        project(REPO / "dbt_project")


def example_config() -> dict[str, Any]:
    """The shipped sandbox example config as a dict, ready to modify."""
    return yaml.safe_load(SANDBOX_CONFIG.read_text())


def write_config(root: Path, mutate: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Write the example config into ``root`` (data under ``root/data``), optionally changed.

    The automatic pause rules are off unless ``mutate`` sets a workspace's ``pause_rules``
    again:
    the demo data's seeded complaint domains trip them (as the demo shows), and the tests
    of everything else must not depend on when feedback lands."""
    config = example_config()
    config["data_dir"] = str(root / "data")
    config["dbt_project_dir"] = str(REPO / "dbt_project")
    config["templates_dir"] = str(REPO / "templates")
    for workspace in config["workspaces"].values():
        workspace["pause_rules"] = {**workspace.get("pause_rules", {}), "enabled": False}
    if mutate:
        mutate(config)
    path = root / "mailers.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def seed_warehouse(settings: Settings, contacts: int) -> None:
    """Create Mailers' tables and seed the demo contacts and manual suppressions."""
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        demo_data.seed(warehouse, contacts)


def project_on(root: Path, warehouse: dict[str, Any] | None) -> Settings:
    """The example config in a new directory ``root`` on ``warehouse`` (a ``warehouse:``
    document; None: the DuckDB default)."""
    root.mkdir()

    def use(config: dict[str, Any]) -> None:
        if warehouse is not None:
            config["warehouse"] = warehouse

    return load(write_config(root, use))


def engine_project(root: Path, warehouse: dict[str, Any] | None, contacts: int) -> Settings:
    """:func:`project_on`, with Mailers' tables and ``contacts`` demo contacts in it."""
    from adapters.warehouses import open_warehouse

    settings = project_on(root, warehouse)
    with open_warehouse(settings) as wh:
        ensure_tables(wh)
        demo_data.seed(wh, contacts)
    return settings


def run_dbt(settings: Settings, *args: str) -> None:
    """Run the project's dbt against this settings' warehouse, failing the test on error."""
    from orchestration.defs.dbt_profile import dbt_environment, dbt_executable, dbt_target

    # A target (and log) path per worker: `dbt run` rewrites the manifest in its target, and
    # other workers read the one in dbt_project/target. Seeded from that one's partial parse,
    # as Dagster's dbt runs are.
    target = dbt_target_path(settings)
    shared_parse = settings.dbt_project_dir / "target" / "partial_parse.msgpack"
    if shared_parse.exists() and not (target / shared_parse.name).exists():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_parse, target / shared_parse.name)
    run_dbt_process(
        Path(dbt_executable()),
        dbt_target(settings),
        dbt_environment(settings),
        args,
        target,
        project_dir=settings.dbt_project_dir,
    )


def run_dbt_process(
    executable: Path,
    target: str,
    environment: Mapping[str, str],
    args: Sequence[str],
    target_path: Path,
    *,
    check: bool = True,
    project_dir: Path = REPO / "dbt_project",
) -> subprocess.CompletedProcess[str]:
    """Run ``dbt ARGS`` of the project in ``project_dir`` with ``executable`` on profile
    target ``target``, with ``environment`` over this process's, its artifacts written to
    ``target_path``; with ``check``, an assertion error with its output's tail unless it
    succeeds."""
    project = str(project_dir)
    env = {
        **os.environ,
        **environment,
        "DO_NOT_TRACK": "1",
        "DBT_TARGET_PATH": str(target_path),
        "DBT_LOG_PATH": str(target_path),
    }
    completed = subprocess.run(
        [
            str(executable),
            *args,
            "--project-dir",
            project,
            "--profiles-dir",
            project,
            "--target",
            target,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-2000:]
    return completed


def dbt_target_path(settings: Settings) -> Path:
    """Where :func:`run_dbt` has dbt write (its ``run_results.json`` and manifest)."""
    return settings.dbt_project_dir / "target" / f"pytest-{_worker()}"


def _worker() -> str:
    """This pytest-xdist worker's id (``gw0``…), or ``main`` without xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def seeded_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse file with demo contacts, suppressions and segment views built by dbt."""
    root = tmp_path_factory.mktemp("seeded")
    settings = load(write_config(root))
    seed_warehouse(settings, 1000)
    run_dbt(settings, "run", "--select", "+path:models/segments")
    return settings.warehouse_path


def send_window_once(
    settings: Settings,
    campaign: str,
    *,
    window: str = "2026-11-23T08:00:00Z",
    run_id: str = "run-1",
    providers: Mapping[str, Provider] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Resolve the audience of one campaign window and send it, as the assets do.

    ``sleep`` waits for mailbox slots; tests on a fixed clock pass its ``advance``."""
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        return send_on(
            warehouse, settings, campaign, window, run_id, providers=providers, sleep=sleep
        )


def send_on(
    warehouse: Warehouse,
    settings: Settings,
    campaign: str,
    window: str,
    run_id: str,
    *,
    providers: Mapping[str, Provider] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Resolve the audience of one campaign window on an open ``warehouse`` and send it."""
    ref = settings.campaign(campaign)
    ledger = LedgerWriter(warehouse, LedgerContext.of(ref, window, run_id))
    table = resolve(warehouse, AudienceSpec.of(ref, window), ledger.settled_keys_sql())
    sender = CampaignSender(
        warehouse,
        SendContext(settings, ref, window, run_id, UNSUBSCRIBE_KEY),
        providers or build_providers(settings, ref.workspace),
        sleep=sleep,
    )
    return sender.run(table)


@pytest.fixture
def core_project(tmp_path: Path, seeded_warehouse: Path) -> Callable[..., Settings]:
    """A project with a copy of the seeded warehouse, for send tests without Dagster."""

    def make(mutate: Callable[[dict[str, Any]], None] | None = None) -> Settings:
        settings = load(write_config(tmp_path, mutate))
        settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(seeded_warehouse, settings.warehouse_path)
        return settings

    return make


def eml_files(settings: Settings, account: str = "*") -> list[Path]:
    return sorted(settings.outbox_dir.glob(f"{account}/*.eml"))


def query(settings: Settings, sql: str) -> list[dict[str, Any]]:
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        return warehouse.query(sql).to_pylist()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test session (one per xdist worker)."""
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed: "
            "apt-get install postgresql (.ci/run does)"
        )
    with running_server(bin_dir) as server:
        yield server


@contextmanager
def postgres_database(server: PostgresServer) -> Iterator[dict[str, Any]]:
    """The ``warehouse:`` config of a fresh, empty database on ``server``, dropped on exit
    (the caller puts the password in the environment variable the config names)."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin_args: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "dbname": server.database,
        "autocommit": True,
    }
    with psycopg.connect(**admin_args) as admin:
        admin.execute(f"create database {name}")
    try:
        yield {**server.warehouse_config(), "database": name}
    finally:
        with psycopg.connect(**admin_args) as admin:
            admin.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
def postgres_config(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The ``warehouse:`` config of a fresh, empty database on the session's server (its
    password in the environment variable the config names); dropped after the test."""
    monkeypatch.setenv(PASSWORD_ENV, postgres_server.password)
    with postgres_database(postgres_server) as config:
        yield config


WAREHOUSE_ENGINES = ("duckdb", "postgres", "snowflake")


@pytest.fixture(params=WAREHOUSE_ENGINES)
def engine_config(request: pytest.FixtureRequest) -> WarehouseConfig:
    """The warehouse config of each engine in turn: a DuckDB file (``warehouse.duckdb``
    under the directory given to ``connect``), a fresh database on the session's Postgres
    server, then an empty Snowflake database on fakesnow (``snowflake_config``)."""
    document = (
        {"kind": "duckdb", "path": "warehouse.duckdb"}
        if request.param == "duckdb"
        else request.getfixturevalue(f"{request.param}_config")
    )
    return TypeAdapter(WarehouseConfig).validate_python(document)


SNOWFLAKE_PASSWORD_ENV = "MAILERS_TEST_SNOWFLAKE_PASSWORD"


@pytest.fixture
def snowflake_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The ``warehouse:`` config of an empty Snowflake database on fakesnow: the connector
    is patched for this test only (every connection opened in it shares one in-memory
    DuckDB, so a writer and a reader see the same tables), its password in the
    environment variable the config names."""
    fakesnow = pytest.importorskip("fakesnow", reason="fakesnow is in the dev extra")
    monkeypatch.setenv(SNOWFLAKE_PASSWORD_ENV, "fakesnow-takes-any-password")
    with fakesnow.patch():
        yield {
            "kind": "snowflake",
            "account": "fakesnow",
            "user": "mailers",
            "database": "MAILERS_TEST",
            "password": {"env": SNOWFLAKE_PASSWORD_ENV},
        }


@pytest.fixture
def snowflake_wire_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The ``warehouse:`` config of an empty Snowflake database on fakesnow's server, which
    the *unpatched* connector reaches over HTTP on a loopback port: the connector's own
    login, result (Arrow) and ``PUT`` paths run, as they do against Snowflake."""
    pytest.importorskip("fakesnow", reason="fakesnow is in the dev extra")
    from .fakesnow_server import running_fakesnow

    monkeypatch.setenv(SNOWFLAKE_PASSWORD_ENV, "fakesnow-takes-any-password")
    with running_fakesnow(patch_connector=False) as server:
        yield server.warehouse_config(SNOWFLAKE_PASSWORD_ENV)


SNOWFLAKE_LIVE_VARIABLES = ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_WAREHOUSE")
"""What a live Snowflake test needs, with ``SNOWFLAKE_PASSWORD`` or ``SNOWFLAKE_PRIVATE_KEY``
(PEM) and optionally ``SNOWFLAKE_ROLE`` and ``SNOWFLAKE_DATABASE`` (where to log in first)."""


def _snowflake_live_document(database: str) -> dict[str, Any]:
    auth = (
        {"private_key": {"env": "SNOWFLAKE_PRIVATE_KEY"}}
        if os.environ.get("SNOWFLAKE_PRIVATE_KEY")
        else {"password": {"env": "SNOWFLAKE_PASSWORD"}}
    )
    return {
        "kind": "snowflake",
        "account": os.environ["SNOWFLAKE_ACCOUNT"],
        "user": os.environ["SNOWFLAKE_USER"],
        "warehouse": os.environ["SNOWFLAKE_WAREHOUSE"],
        "role": os.environ.get("SNOWFLAKE_ROLE"),
        "database": database,
        **auth,
    }


@pytest.fixture
def snowflake_live_config() -> Iterator[dict[str, Any]]:
    """The ``warehouse:`` config of a transient database ``MAILERS_TEST_<random>`` on the
    real account the environment names (:data:`SNOWFLAKE_LIVE_VARIABLES`), dropped after
    the test; skipped without those variables."""
    import uuid

    from adapters.warehouses.snowflake import open_snowflake
    from mailers.snowflake_config import SnowflakeWarehouseConfig

    missing = [name for name in SNOWFLAKE_LIVE_VARIABLES if not os.environ.get(name)]
    if missing:
        pytest.skip(f"live Snowflake tests need {', '.join(missing)}")
    database = f"MAILERS_TEST_{uuid.uuid4().hex[:10].upper()}"
    login = _snowflake_live_document(os.environ.get("SNOWFLAKE_DATABASE", "SNOWFLAKE"))
    # Read-only: the admin session only creates and drops the database, no stage of its own.
    with open_snowflake(SnowflakeWarehouseConfig.model_validate(login), read_only=True) as admin:
        admin.execute(f'create transient database "{database}"')
        try:
            yield _snowflake_live_document(database)
        finally:
            admin.execute(f'drop database if exists "{database}"')


@pytest.fixture(scope="session")
def bigquery_emulator() -> Iterator[BigQueryEmulator]:
    """A BigQuery emulator of this test session (one per xdist worker), in its own venv."""
    try:
        executable = ensure_venv()
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot create the bqemulator venv (tests/tool_venv.sh): {err.stderr}")
    with running_emulator(executable) as emulator:
        yield emulator


@pytest.fixture
def bigquery_config(bigquery_emulator: BigQueryEmulator) -> Iterator[dict[str, Any]]:
    """The ``warehouse:`` config of the session's emulator; every dataset a test made is
    dropped after it, so each test starts from an empty project."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    yield bigquery_emulator.warehouse_config()
    client = bigquery.Client(
        project=bigquery_emulator.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(
            api_endpoint=f"http://127.0.0.1:{bigquery_emulator.rest_port}"
        ),
    )
    with client:
        for dataset in client.list_datasets():
            client.delete_dataset(dataset.reference, delete_contents=True, not_found_ok=True)
