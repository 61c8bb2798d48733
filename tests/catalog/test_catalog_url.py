"""ZOO_CATALOG_URL mistakes cost one line, never a traceback or an empty catalog file."""

from __future__ import annotations

from pathlib import Path

from zoo.catalog.source import driver_url, masked

SECRET = "url-S3cret-77"


def one_line_error(r) -> str:  # noqa: ANN001
    assert r.code == 1, (r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    assert SECRET not in r.out + r.err
    return r.err


def test_sqlite_typo_says_no_such_file_and_creates_nothing(cli, tmp_path: Path) -> None:
    missing = tmp_path / "regsitry.db"
    err = one_line_error(cli("list", env={"ZOO_CATALOG_URL": f"sqlite:///{missing}"}))
    assert f"cannot read the catalog at sqlite:///{missing}: unable to open database file" in err
    assert not missing.exists()


def test_postgres_without_driver_names_the_extra(cli, tmp_path: Path) -> None:
    blocker = tmp_path / "no-driver" / "psycopg"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    url = f"postgresql://zoo:{SECRET}@127.0.0.1:9/team"
    err = one_line_error(cli("show", "obert-3l-90", env={"ZOO_CATALOG_URL": url, "PYTHONPATH": str(blocker.parent)}))
    assert err == ("error: the catalog at postgresql://zoo:***@127.0.0.1:9/team needs the 'psycopg' database driver, "
                   "which is not installed (pip install 'obert-zoo[postgres]')\n")


def test_not_a_url_and_unknown_dialect(cli) -> None:
    assert "is not a database URL" in one_line_error(cli("list", env={"ZOO_CATALOG_URL": f"zoo:{SECRET}@host/db"}))
    assert "SQLAlchemy has no dialect" in one_line_error(cli("list", env={"ZOO_CATALOG_URL": f"nosuchdb://u:{SECRET}@h/db"}))


def test_urls_given_to_sqlalchemy() -> None:
    assert driver_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    read = driver_url("sqlite:////x/registry.db")
    assert (read.database, dict(read.query)) == ("file:/x/registry.db", {"mode": "ro", "uri": "true"})
    assert driver_url("sqlite:////x/registry.db", write=True).database == "/x/registry.db"
    assert masked(f"postgresql://u:{SECRET}@h:5/db") == "postgresql://u:***@h:5/db"


def test_sqlite_file_names_with_uri_characters_open_that_file(cli, tmp_path: Path) -> None:  # noqa: ANN001
    """The read-only ``file:`` URI SQLite is given percent-encodes the path: '#' would end it (a fragment), '%'
    would be decoded again (the catalog URL itself is a URL: '%' is written '%25' there, as SQLAlchemy reads it)."""
    import shutil

    from zoo.config import bundled_registry

    decoy = tmp_path / "h"
    shutil.copyfile(bundled_registry(), decoy)  # what a path cut at '#' would open instead
    for name, in_url in (("h#x.db", "h#x.db"), ("a%41 é.db", "a%2541 é.db")):
        shutil.copyfile(bundled_registry(), tmp_path / name)
        res = cli("list", "--json", env={"ZOO_CATALOG_URL": f"sqlite:///{tmp_path / in_url}"})
        assert res.code == 0 and len(res.json()) > 10, res.err
    decoy.write_bytes(b"not a database")
    res = cli("list", "--json", env={"ZOO_CATALOG_URL": f"sqlite:///{tmp_path / 'h#x.db'}"})
    assert res.code == 0 and len(res.json()) > 10, res.err
