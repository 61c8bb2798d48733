"""A real PostgreSQL server for the team-catalog tests: initdb in a temporary directory, 127.0.0.1, a random port.

The server binaries come from PATH or Debian's ``/usr/lib/postgresql/<version>/bin`` (``.ci/run`` installs
them when missing). ``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user
(or ``nobody``) through ``runuser``. A login role ``zoo`` with a password owns one fresh database per test.
Without the binaries the tests are skipped, unless ``ZOO_REQUIRE_POSTGRES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD = "pg-S3cret-9f2c"  # distinctive, so an assertion that it never appears in output means something


def server_bin() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name), reverse=True)
    return versions[0].parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Postgres:
    port: int
    socket_dir: Path
    _count = itertools.count()

    def url(self, db: str = "postgres", password: bool = True, user: str = "zoo") -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{db}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=self.port, user="admin", dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)

    def database(self) -> str:
        name = f"zoo_{os.getpid()}_{next(self._count)}"
        self.admin(f"CREATE DATABASE {name} OWNER zoo")
        return name


def _as(user: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    bindir = server_bin()
    if bindir is None:
        if os.environ.get("ZOO_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found; `apt-get install postgresql` (.ci/run does)")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; `apt-get install postgresql`")
    user = None
    root = Path(tempfile.mkdtemp(prefix="zoo-pg-"))  # not under pytest's tmp: that is closed to other users
    if os.geteuid() == 0:
        user = "postgres" if _exists("postgres") else "nobody"
        shutil.chown(root, user)
    data, sock, port = root / "data", root / "sock", free_port()
    run = dict(check=True, capture_output=True, text=True, cwd=root)
    subprocess.run(_as(user, ["mkdir", str(sock)]), **run)
    subprocess.run(_as(user, [str(bindir / "initdb"), "-D", str(data), "-U", "admin", "-N", "-A", "trust",
                              "--auth-host=scram-sha-256"]), **run)
    opts = f"-h 127.0.0.1 -p {port} -k {sock} -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    subprocess.run(_as(user, [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]), **run)
    server = Postgres(port, sock)
    try:
        server.admin(f"CREATE ROLE zoo LOGIN PASSWORD '{PASSWORD}' CREATEDB")
        yield server
    finally:
        subprocess.run(_as(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """A fresh, empty database owned by ``zoo``; the URL carries the password."""
    return postgres.url(postgres.database())
