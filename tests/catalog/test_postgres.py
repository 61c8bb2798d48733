"""The team catalog on a real PostgreSQL server (tests/catalog/conftest.py): push, every read command against it,
concurrent pushes, schema versions, the offline snapshot, and the password kept out of every output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psycopg
import pytest

from zoo import config
from zoo.catalog import list_models, resolve
from zoo.catalog.fields import SCHEMA_VERSION
from zoo.catalog.push import LOCK
from zoo.catalog.stubfile import to_toml
from zoo.config import Settings

from ..conftest import STUBS
from .conftest import PASSWORD, Postgres

BUNDLED = len(list(STUBS.glob("*.toml")))


def ok(r):  # noqa: ANN001, ANN201
    assert r.code == 0, r.err
    assert PASSWORD not in r.out + r.err
    return r


def one_line(r) -> str:  # noqa: ANN001
    assert r.code == 1 and r.err.startswith("error: ") and r.err.count("\n") == 1, (r.out, r.err)
    assert PASSWORD not in r.out + r.err
    return r.err


def team_stubs(directory: Path, *names: str) -> Path:
    """Team entries shaped like obert-3l-90 under new names (no aliases, so nothing clashes)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        raw = tomllib.loads((STUBS / "obert-3l-90.toml").read_text())
        raw.update(name=name, description=f"team model {name}", aliases=[])
        (directory / f"{name}.toml").write_text(to_toml(raw))
    return directory


def sql(url: str, statement: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def test_push_then_every_read_command(cli, pg_url: str, tmp_path: Path) -> None:
    team = team_stubs(tmp_path / "team", "acme-bert-3l-90")
    r = ok(cli("catalog", "push", pg_url, "--stubs", str(team), "--json"))
    assert r.json()["models"] == BUNDLED + 1 and len(r.json()["added"]) == BUNDLED + 1 and r.json()["revision"] == 1
    assert r.json()["url"].startswith("postgresql://zoo:***@127.0.0.1:")
    env = {"ZOO_CATALOG_URL": pg_url}
    names = [c["name"] for c in ok(cli("list", "--json", env=env)).json()]
    assert len(names) == BUNDLED + 1 and "acme-bert-3l-90" in names
    server = ok(cli("show", "obert-3l-80-quant", "--json", env=env)).json()
    assert server == ok(cli("show", "obert-3l-80-quant", "--json")).json()  # same card as the bundled registry.db
    assert "acme-bert-3l-90" in ok(cli("search", "team model", env=env)).out
    assert "OBSPruningModifier" in ok(cli("recipe", "obert-12l-80-block4", env=env)).out


def test_reads_need_no_local_registry(pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli) -> None:
    ok(cli("catalog", "push", pg_url))
    monkeypatch.setattr(config, "bundled_registry", lambda: tmp_path / "absent.db")
    settings = Settings.from_env(catalog_url=pg_url)
    assert len(list_models(settings=settings)) == BUNDLED
    assert resolve("neuralmagic/oBERT-3-downstream-pruned-unstructured-90-squadv1", settings).name == "obert-3l-90"


def dump(url: str) -> list:
    tables = ["models", "aliases", "files", "metrics", "tags", "recipes", "sources", "meta", "stub_texts"]
    return [sql(url, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables]


def test_push_is_idempotent(cli, pg_url: str) -> None:
    ok(cli("catalog", "push", pg_url))
    before = dump(pg_url)
    again = ok(cli("catalog", "push", pg_url, "--json")).json()
    assert (again["added"], again["updated"], again["unchanged"], again["revision"]) == ([], [], BUNDLED, 1)
    assert dump(pg_url) == before


def test_concurrent_pushes_both_land(pg_url: str, tmp_path: Path) -> None:
    """Two pushes started while a third party holds the push lock both wait, then both land, one after the other."""
    a, b = team_stubs(tmp_path / "a", "team-a-3l"), team_stubs(tmp_path / "b", "team-b-3l")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with psycopg.connect(pg_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        procs = [subprocess.Popen([sys.executable, "-m", "zoo", "catalog", "push", pg_url, "--stubs", str(d), "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for d in (a, b)]
        deadline = time.monotonic() + 60
        while sql(pg_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")[0][0] < 2:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        holder.rollback()  # releases the lock
        outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(__import__("json").loads(o)["revision"] for o, _ in outs) == [1, 2]
    names = {c.name for c in list_models(settings=Settings.from_env(catalog_url=pg_url))}
    assert {"team-a-3l", "team-b-3l"} <= names and len(names) == BUNDLED + 2
    assert sql(pg_url, "SELECT count(*) FROM stub_texts")[0][0] == BUNDLED + 2


def test_schema_versions(cli, pg_url: str, tmp_path: Path) -> None:
    env = {"ZOO_CATALOG_URL": pg_url}
    ok(cli("catalog", "push", pg_url, "--stubs", str(team_stubs(tmp_path / "t", "kept-3l"))))
    sql(pg_url, f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
    assert "this zoo reads" in one_line(cli("list", env=env)) and "upgrade obert-zoo" in one_line(cli("list", env=env))
    err = one_line(cli("catalog", "push", pg_url))
    assert f"has schema version {SCHEMA_VERSION + 1}, this zoo writes {SCHEMA_VERSION}" in err and "upgrade obert-zoo" in err

    sql(pg_url, "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    sql(pg_url, "ALTER TABLE models DROP COLUMN hidden")  # what an older zoo's tables could look like
    assert "migrate it with `zoo catalog push URL`" in one_line(cli("list", env=env))
    r = ok(cli("catalog", "push", pg_url))
    assert "migrated from schema version 1" in r.out
    assert ok(cli("show", "kept-3l", "--json", env=env)).json()["hidden"] == 768  # the team's entry survived, rebuilt


def test_offline_reads_the_snapshot(cli, pg_url: str, postgres: Postgres) -> None:
    env = {"ZOO_CATALOG_URL": pg_url}
    assert "no snapshot" in one_line(cli("--offline", "list", env=env))
    ok(cli("catalog", "push", pg_url))
    online = ok(cli("list", "--json", env=env)).json()
    db = pg_url.rsplit("/", 1)[1]
    postgres.admin(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
    try:
        err = one_line(cli("list", env=env))
        assert "is not currently accepting connections" in err and "--offline" in err
        r = ok(cli("--offline", "list", "--json", env=env))
        assert r.json() == online
        assert "catalog: offline, using the snapshot of postgresql://zoo:***@" in r.err
        assert ok(cli("show", "obert-3l-90", "--json", env={**env, "ZOO_OFFLINE": "1"})).json()["layers"] == 3
    finally:
        postgres.admin(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")


def test_server_down_is_one_line(cli, postgres: Postgres) -> None:
    from .conftest import free_port

    url = f"postgresql://zoo:{PASSWORD}@127.0.0.1:{free_port()}/team"
    for args in (("list",), ("show", "obert-3l-90", "--json"), ("download", "obert-3l-90")):
        err = one_line(cli(*args, env={"ZOO_CATALOG_URL": url}))
        assert "cannot read the catalog at postgresql://zoo:***@127.0.0.1:" in err and "Connection refused" in err
    assert "cannot push to the catalog at postgresql://zoo:***@" in one_line(cli("catalog", "push", url))


def test_wrong_password_is_masked(cli, postgres: Postgres, pg_url: str) -> None:
    url = pg_url.replace(PASSWORD, PASSWORD[::-1])
    err = one_line(cli("list", env={"ZOO_CATALOG_URL": url}))
    assert 'password authentication failed for user "zoo"' in err and PASSWORD[::-1] not in err


def test_pgpass_and_sslmode(cli, postgres: Postgres, pg_url: str, tmp_path: Path) -> None:
    ok(cli("catalog", "push", pg_url))
    db = pg_url.rsplit("/", 1)[1]
    bare = postgres.url(db, password=False)
    assert "@" in bare and PASSWORD not in bare
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres.port}:{db}:zoo:{PASSWORD}\n")
    pgpass.chmod(0o600)
    env = {"ZOO_CATALOG_URL": bare, "PGPASSFILE": str(pgpass)}
    assert len(ok(cli("list", "--json", env=env)).json()) == BUNDLED
    empty = tmp_path / "empty"
    empty.write_text("")
    empty.chmod(0o600)
    assert "no password supplied" in one_line(cli("list", env={**env, "PGPASSFILE": str(empty)}))
    assert "server does not support SSL, but SSL was required" in one_line(cli("list", env={**env, "PGSSLMODE": "require"}))
    assert len(ok(cli("list", "--json", env={**env, "PGSSLMODE": "prefer"})).json()) == BUNDLED
