"""A real PostgreSQL server for the tests: ``initdb`` in a temporary directory, ``postgres``
on a free loopback port, password authentication, torn down at the end.

``postgres`` refuses to run as root, so as root the server runs as an unprivileged system
user (``postgres`` when the distribution's package created it, else one made here with
``useradd``) through ``runuser``. The binaries come from PATH or Debian's
``/usr/lib/postgresql/<version>/bin``; ``.ci/run`` installs Debian's ``postgresql`` package
when they are missing, so CI never skips these tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "mailers-pg"
"""The system user the server runs as when the tests run as root and no ``postgres``
user exists."""

DATABASE = "mailers_test"
ROLE = "mailers"
PASSWORD_ENV = "MAILERS_TEST_PG_PASSWORD"


def binaries() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb") and shutil.which("postgres"):
        return Path(found).parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return debian[0].parent if debian else None


@dataclass(frozen=True)
class PostgresServer:
    """A running server: where it listens, and the role and database the tests use."""

    host: str
    port: int
    database: str
    user: str
    password: str

    def warehouse_config(self) -> dict[str, object]:
        """The ``warehouse:`` section of a config pointing at this server."""
        return {
            "kind": "postgres",
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "user": self.user,
            "password": {"env": PASSWORD_ENV},
        }


def _server_user() -> str | None:
    """The user to run the server as (None: the current, unprivileged, one)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVER_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
        check=True,
        capture_output=True,
    )
    return SERVER_USER


def _as(user: str | None, command: Sequence[str]) -> list[str]:
    return list(command) if user is None else ["runuser", "-u", user, "--", *command]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_server(bin_dir: Path) -> Iterator[PostgresServer]:
    """Start a fresh server; stop it and delete its files on exit."""
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="mailers-pg-"))
    data = root / "data"
    password = os.urandom(12).hex()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    pwfile.chmod(0o600)

    def run(*command: str) -> None:
        executable = [str(bin_dir / command[0]), *command[1:]]
        subprocess.run(_as(user, executable), check=True, capture_output=True, text=True)

    started = False
    try:
        run(
            "initdb", "-D", str(data), "-U", ROLE, "--pwfile", str(pwfile),
            "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C",
        )  # fmt: skip
        for _attempt in range(5):
            port = _free_port()
            # No unix socket (its directory may not be writable by that user); loopback only;
            # durability is not what these tests are about.
            options = (
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                run("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
                    "-t", "120", "start")  # fmt: skip
            except subprocess.CalledProcessError:
                continue  # another process took the port meanwhile
            started = True
            break
        else:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            raise RuntimeError(f"postgres did not start:\n{log[-2000:]}")
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=port, user=ROLE, password=password, dbname="postgres",
            autocommit=True,
        ) as admin:  # fmt: skip
            admin.execute(f"create database {DATABASE}")
        yield PostgresServer("127.0.0.1", port, DATABASE, ROLE, password)
    finally:
        if started:
            subprocess.run(
                _as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)
