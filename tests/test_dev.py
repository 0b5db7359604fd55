"""``mailers dev``: the ports it is given are the ports it serves, and it says so."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from adapters.settings import SIMULATOR_PORT_ENV, load
from mailers.errors import ConfigError
from tests.conftest import REPO


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


Process = subprocess.Popen[bytes]
Start = Callable[..., tuple[Process, Path]]


def _project(root: Path, mutate: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The shipped mailers.yaml (simulated accounts) with its data under ``root``."""
    config = yaml.safe_load((REPO / "mailers.yaml").read_text())
    config["data_dir"] = str(root / "data")
    config["dbt_project_dir"] = str(REPO / "dbt_project")
    config["templates_dir"] = str(REPO / "templates")
    if mutate:
        mutate(config)
    path = root / "mailers.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copyfile(REPO / "workspace.yaml", root / "workspace.yaml")
    return path


def _mailers() -> str:
    beside = Path(sys.executable).parent / "mailers"
    return str(beside if beside.exists() else shutil.which("mailers"))


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def started(tmp_path: Path, dev_env: dict[str, str]) -> Iterator[Start]:
    """Starts ``mailers dev`` in its own process group; the group is stopped afterwards."""
    processes: list[Process] = []

    def start(*args: str) -> tuple[Process, Path]:
        log = tmp_path / "dev.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [_mailers(), "dev", *args],
                cwd=tmp_path,
                env=dev_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.append(process)
        return process, log

    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _wait_for(log: Path, text: str, process: Process, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        output = log.read_text(errors="replace")
        if text in output:
            return output
        if process.poll() is not None:
            break
        time.sleep(1)
    raise AssertionError(
        f"{text!r} not printed; output:\n{log.read_text(errors='replace')[-4000:]}"
    )


def test_dev_serves_the_ui_and_the_simulator_on_the_ports_it_is_given(
    tmp_path: Path, started: Start
) -> None:
    ui_port, simulator_port = _free_port(), _free_port()
    config = _project(tmp_path)

    process, log = started(
        "--config", str(config), "--port", str(ui_port), "--simulator-port", str(simulator_port)
    )

    output = _wait_for(log, f"Dagster UI on http://127.0.0.1:{ui_port}", process, 300)
    assert (
        f"provider simulator (mailgun, postmark, resend, sendgrid) on http://127.0.0.1:{simulator_port}"
        in output
    )
    assert httpx.get(f"http://127.0.0.1:{ui_port}/server_info", timeout=10).status_code == 200
    simulator = httpx.get(f"http://127.0.0.1:{simulator_port}/nowhere", timeout=10)
    assert simulator.status_code in {401, 404}
    # The shipped instance config: the daemon dagster dev starts monitors runs.
    _wait_for(log, "'MonitoringDaemon'", process, 120)


def test_dev_refuses_a_ui_port_in_use_before_starting_anything(
    tmp_path: Path, started: Start
) -> None:
    simulator_port = _free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process, log = started(
            "--config",
            str(_project(tmp_path)),
            "--port",
            str(port),
            "--simulator-port",
            str(simulator_port),
        )
        assert process.wait(timeout=120) == 1
    output = log.read_text()
    assert f"port {port} on 127.0.0.1 is in use" in output
    assert "provider simulator" not in output


def test_the_simulator_port_moves_only_simulated_accounts(tmp_path: Path) -> None:
    def with_real_account(config: dict[str, Any]) -> None:
        accounts = config["workspaces"]["acme"]["provider_accounts"]
        accounts["acme_real"] = {
            "kind": "postmark",
            "credentials": {"server_token": {"env": "ACME_REAL_TOKEN"}},
            "settings": {"base_url": "https://api.postmarkapp.com"},
        }

    config = _project(tmp_path, with_real_account)

    moved = load(config, {SIMULATOR_PORT_ENV: "9123"})

    accounts = moved.config.workspaces["acme"].provider_accounts
    assert accounts["acme_postmark"].settings["base_url"] == "http://127.0.0.1:9123"
    assert accounts["acme_real"].settings["base_url"] == "https://api.postmarkapp.com"
    assert moved.config_hash == load(config, {}).config_hash
    with pytest.raises(ConfigError, match=f"{SIMULATOR_PORT_ENV}='80x' is not a TCP port"):
        load(config, {SIMULATOR_PORT_ENV: "80x"})
