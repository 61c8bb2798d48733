"""Crafted catalogs: the right tables and schema version, but rows no ``zoo catalog build`` or ``push`` writes
(SQLite keeps any value in any column). Each is refused by the real CLI with one line naming the catalog, the entry,
the field and what is wrong, and exit status 1: never a traceback, never a hang. A value merely odd but safe is
shown. Nothing from a catalog that failed is kept, and no file path from a catalog leads out of the model's folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from zoo.catalog import cardcache
from zoo.catalog.fields import SCHEMA_VERSION
from zoo.config import bundled_registry
from zoo.errors import CatalogError
from zoo.fetch.store import Manifest, ManifestFile, Store

from ..conftest import STUBS

MODEL = "obert-3l-80-quant"
ROW = f"(SELECT id FROM models WHERE name = '{MODEL}')"
FIRST_FILE = f"(SELECT min(id) FROM files WHERE model_id = {ROW})"
FIRST_METRIC = f"(SELECT min(id) FROM metrics WHERE model_id = {ROW})"
FIRST_ALIAS = f"(SELECT min(id) FROM aliases WHERE model_id = {ROW})"
TEN_MB = "(SELECT replace(hex(zeroblob(5242880)), '00', 'ab'))"
FIX = "(rebuild it (`zoo catalog build`) or push it again (`zoo catalog push`), or check ZOO_CATALOG_URL)"


def loose(table: str) -> str:
    """SQL that keeps ``table``'s rows but drops its constraints (NOT NULL, UNIQUE, keys): a file crafted by hand."""
    return f"CREATE TABLE loose AS SELECT * FROM {table}; DROP TABLE {table}; ALTER TABLE loose RENAME TO {table};"


def set_file(column: str, value: str) -> str:
    return f"UPDATE files SET {column} = {value} WHERE id = {FIRST_FILE};"


@dataclass(frozen=True)
class Case:
    id: str
    sql: str
    says: str  # how the line after "error: " starts, with {url} for the catalog's URL and {version} for SCHEMA_VERSION
    also: str = ""  # and what else it says


ENTRY = f"catalog at {{url}}: model '{MODEL}': "
CASES = [
    # a value of another type than its column's (SQLite's columns hold anything)
    Case("layers-text", f"UPDATE models SET layers = 'abc' WHERE id = {ROW};", ENTRY + "layers: expected int, got str 'abc'"),
    Case("layers-float", f"UPDATE models SET layers = 3.5 WHERE id = {ROW};", ENTRY + "layers: expected int, got float 3.5"),
    Case("sparsity-text", f"UPDATE models SET sparsity = 'x' WHERE id = {ROW};", ENTRY + "sparsity: expected float, got str 'x'"),
    Case("sparsity-nan", f"UPDATE models SET sparsity = 'NaN' WHERE id = {ROW};", ENTRY + "sparsity: expected float, got str 'NaN'"),
    Case("description-blob", f"UPDATE models SET description = X'00FF10' WHERE id = {ROW};",
         ENTRY + "description: expected str, got bytes b'\\x00\\xff\\x10'"),
    Case("metric-text", f"UPDATE metrics SET value = 'high' WHERE id = {FIRST_METRIC};",
         ENTRY + "metrics[0].value: expected float, got str 'high'"),
    Case("approx-size-text", f"UPDATE files SET approx_size_mb = 'big' WHERE model_id = {ROW} AND approx_size_mb IS NOT NULL;",
         ENTRY + "files[1].approx_size_mb: expected float or None, got str 'big'"),
    # numbers out of range, or not numbers at all
    Case("sparsity-huge", f"UPDATE models SET sparsity = 1e308 WHERE id = {ROW};", ENTRY + "sparsity: must be between 0 and 100, got 1e+308"),
    Case("sparsity-inf", f"UPDATE models SET sparsity = 9e999 WHERE id = {ROW};", ENTRY + "sparsity: must be a finite number, got inf"),
    Case("layers-negative", f"UPDATE models SET layers = -3 WHERE id = {ROW};", ENTRY + "layers: must be between 1 and 48, got -3"),
    Case("layers-huge", f"UPDATE models SET layers = 9223372036854775807 WHERE id = {ROW};",
         ENTRY + "layers: must be between 1 and 48, got 9223372036854775807"),
    Case("size-negative", set_file("size", "-5"), ENTRY + "files[0].size: must be between 0 and 3.51844e+13, got -5"),
    Case("size-huge", set_file("size", "9223372036854775807"), ENTRY + "files[0].size: must be between 0 and 3.51844e+13"),
    # NULL where the card cannot do without (the columns are NOT NULL: a crafted file has none of that)
    Case("name-null", loose("models") + f"UPDATE models SET name = NULL WHERE id = {ROW};",
         "catalog at {url}: model number 1: name: expected str, got None"),
    Case("description-null", loose("models") + f"UPDATE models SET description = NULL WHERE id = {ROW};",
         ENTRY + "description: expected str, got None"),
    Case("tag-null", loose("tags") + f"UPDATE tags SET name = NULL WHERE model_id = {ROW};", ENTRY + "tags[0]: expected str, got None"),
    Case("metric-source-missing", f"UPDATE metrics SET source_id = 9999 WHERE id = {FIRST_METRIC};",
         ENTRY + "metrics[0].source: expected str, got None"),
    # values outside their field's choices or form
    Case("task-unknown", f"UPDATE models SET task = 'token-classification' WHERE id = {ROW};",
         ENTRY + "task: must be one of question-answering, text-classification, fill-mask, got 'token-classification'"),
    Case("quantization-unknown", f"UPDATE models SET quantization = 'int4' WHERE id = {ROW};",
         ENTRY + "quantization: must be one of none, int8-qat, got 'int4'"),
    Case("metric-unknown", f"UPDATE metrics SET name = 'bleu' WHERE id = {FIRST_METRIC};",
         ENTRY + "metrics[0].name: must be one of f1, exact_match, accuracy, accuracy_matched, got 'bleu'"),
    Case("sha256-bad", set_file("sha256", "'zz'"), ENTRY + "files[0].sha256: must be 64 lower-case hex digits, got 'zz'"),
    Case("name-hostile", f"UPDATE models SET name = '../../evil' WHERE id = {ROW};",
         "catalog at {url}: model number 1: name: must be lower-case letters, digits, '.' and '-', got '../../evil'"),
    Case("repo-hostile", f"UPDATE models SET repo = '../../etc' WHERE id = {ROW};",
         ENTRY + "repo: must be a repo id such as org/name (letters, digits, '_', '.', '-'), got '../../etc'"),
    Case("revision-hostile", f"UPDATE models SET revision = '../../../x' WHERE id = {ROW};",
         ENTRY + "revision: must be a branch, tag or commit"),
    # text no terminal or table should be handed
    Case("description-10mb", f"UPDATE models SET description = {TEN_MB} WHERE id = {ROW};",
         ENTRY + "description: must be at most 2000 characters, got 10485760"),
    Case("source-10mb", f"UPDATE sources SET text = {TEN_MB} WHERE id = (SELECT source_id FROM metrics WHERE id = {FIRST_METRIC});",
         "catalog at {url}: model '", also="source: must be at most 2000 characters, got 10485760"),
    Case("description-escape", f"UPDATE models SET description = 'a' || char(27) || ']0;owned' || char(7) WHERE id = {ROW};",
         ENTRY + "description: must be printable text, got '\\x1b' at position 1 of 'a\\x1b]0;owned\\x07'"),
    Case("not-utf8", f"UPDATE models SET description = CAST(X'41FF1B5B324A' AS TEXT) WHERE id = {ROW};",
         "cannot read the catalog at {url}: Could not decode to UTF-8 column 'description' with text"),
    # the recipe's JSON column
    Case("stages-not-json", f"UPDATE recipes SET stages = '{{not json' WHERE model_id = {ROW};",
         "catalog at {url}: recipes.stages is not JSON (Expecting property name enclosed in double quotes"),
    Case("stages-deep", f"UPDATE recipes SET stages = (SELECT replace(hex(zeroblob(100000)), '00', '[')) WHERE model_id = {ROW};",
         "catalog at {url}: recipes.stages is nested too deeply"),
    Case("stages-list", f"UPDATE recipes SET stages = '[1, 2]' WHERE model_id = {ROW};",
         ENTRY + "recipe.stages: expected a mapping, got list [1, 2]"),
    Case("stages-null", f"UPDATE recipes SET stages = 'null' WHERE model_id = {ROW};", ENTRY + "recipe.stages: expected a mapping, got None"),
    Case("stages-group-list", f"""UPDATE recipes SET stages = '{{"pruning": [1]}}' WHERE model_id = {ROW};""",
         ENTRY + "recipe.stages.pruning: expected a mapping, got list [1]"),
    Case("stages-yaml-key", f"""UPDATE recipes SET stages = '{{"pruning": {{"a: 1": 2}}}}' WHERE model_id = {ROW};""",
         ENTRY + "recipe.stages.pruning: must be named by identifiers (letters, digits, '_'), got 'a: 1'"),
    Case("stages-nested-value", f"""UPDATE recipes SET stages = '{{"pruning": {{"x": {{"y": 1}}}}}}' WHERE model_id = {ROW};""",
         ENTRY + "recipe.stages.pruning.x: expected text, a number or a boolean, got dict {{'y': 1}}"),
    Case("recipe-twice", loose("recipes") + f"INSERT INTO recipes SELECT 999, model_id, source_id, epochs, stages FROM recipes "
         f"WHERE model_id = {ROW};",
         "catalog at {url}: rows that make no card (Multiple rows returned with uselist=False for eagerly-loaded attribute 'Model.recipe')"),
    # names and aliases that would make a lookup pick one of two
    Case("alias-twice", loose("aliases") + "INSERT INTO aliases SELECT 999, (SELECT id FROM models WHERE name = 'obert-6l-80'), name, "
         f"'dup', kind, verified FROM aliases WHERE id = {FIRST_ALIAS};",
         "catalog at {url}: model 'obert-6l-80': alias 'neuralmagic/oBERT-3-downstream-pruned-block4-80-QAT-squadv1' is already an "
         f"alias of '{MODEL}'"),
    Case("alias-is-a-name", f"UPDATE aliases SET name = 'OBERT-3L-80' WHERE id = {FIRST_ALIAS};",
         ENTRY[:-2] + ": alias 'OBERT-3L-80' is already the name of 'obert-3l-80'"),
    Case("name-twice", loose("models") + f"INSERT INTO models SELECT * FROM models WHERE id = {ROW}; "
         "UPDATE models SET id = 999 WHERE rowid = (SELECT max(rowid) FROM models);",
         f"catalog at {{url}}: model '{MODEL}': name '{MODEL}' is already the name of '{MODEL}'"),
    # file paths that would lead out of the model's folder, or clash in it
    Case("path-parent", set_file("path", "'../../etc/passwd'"),
         ENTRY + "files[0].path: must be a relative path inside the repo (no '..', no leading '/'), got '../../etc/passwd'"),
    Case("path-absolute", set_file("path", "'/abs'"), ENTRY + "files[0].path: must be a relative path inside the repo"),
    Case("path-inner-parent", set_file("path", "'a/../../b'"), ENTRY + "files[0].path: must be a relative path inside the repo"),
    Case("path-backslash", set_file("path", "'..\\evil'"), ENTRY + "files[0].path: must be a relative path inside the repo"),
    Case("path-empty", set_file("path", "''"), ENTRY + "files[0].path: must be a relative path inside the repo"),
    Case("path-nul", set_file("path", "'a' || char(0) || 'b'"), ENTRY + "files[0].path: must be printable text, got '\\x00'"),
    Case("path-long-part", set_file("path", "(SELECT replace(hex(zeroblob(150)), '00', 'ab'))"),
         ENTRY + "files[0].path: must have no part longer than 255 bytes"),
    Case("path-twice", loose("files") + f"INSERT INTO files SELECT 999, model_id, path, required, size, sha256, approx_size_mb, "
         f"size_source_id FROM files WHERE id = {FIRST_FILE};", ENTRY + "files[7]: path 'config.json' is listed twice"),
    Case("path-file-and-folder", f"INSERT INTO files (model_id, path, required) VALUES ({ROW}, 'config.json/x', 1);",
         ENTRY + "files: 'config.json' is both a file and the folder of another file"),
    # the schema: tables, columns and the version
    Case("table-missing", "DROP TABLE tags;", "cannot read the catalog at {url}: no such table: tags"),
    Case("column-missing", "ALTER TABLE models DROP COLUMN heads;", "cannot read the catalog at {url}: no such column: models.heads"),
    Case("meta-missing", "DROP TABLE meta;", "cannot read the catalog at {url}: no such table: meta"),
    Case("version-missing", "DELETE FROM meta WHERE key = 'schema_version';", "catalog at {url} has schema version none, this zoo reads {version}"),
    Case("version-garbage", "UPDATE meta SET value = 'garbage' WHERE key = 'schema_version';",
         "catalog at {url} has schema version 'garbage', this zoo reads {version} (rebuild it"),
    Case("version-digit-lookalike", "UPDATE meta SET value = '²' WHERE key = 'schema_version';",
         "catalog at {url} has schema version '²', this zoo reads {version} (rebuild it"),
    Case("version-future", "UPDATE meta SET value = '99' WHERE key = 'schema_version';",
         "catalog at {url} has schema version 99, this zoo reads {version} (upgrade obert-zoo"),
    Case("version-escape", f"UPDATE meta SET value = char(27) || '[2J' || {TEN_MB} WHERE key = 'schema_version';",
         "catalog at {url} has schema version '\\x1b[2Jabababab"),
]
BY_ID = {c.id: c for c in CASES}
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# the same line from every command that reads the catalog
EVERY_COMMAND = ["layers-text", "description-blob", "stages-not-json", "path-parent", "alias-twice", "table-missing"]
COMMANDS = [("list", "--json"), ("show", MODEL), ("search", "obert"), ("download", MODEL, "--offline")]


def crafted(directory: Path, sql: str) -> Path:
    """A copy of the bundled catalog, altered by ``sql`` (no seed beside it)."""
    db = directory / "crafted.db"
    shutil.copyfile(bundled_registry(), db)
    conn = sqlite3.connect(db)
    try:
        conn.executescript(sql)
        conn.commit()
    finally:
        conn.close()
    return db


def one_line(result) -> str:  # noqa: ANN001
    """The error line of a refused command: exit status 1, one short printable line on stderr, no traceback."""
    assert "Traceback" not in result.err, result.err[-3000:]
    lines = result.err.strip().splitlines()
    assert result.code == 1 and len(lines) == 1, (result.code, result.err[-3000:])
    assert len(lines[0]) < 1000 and not UNPRINTABLE.search(lines[0]), lines[0][:1000]
    return lines[0]


def kept_cards(home: Path) -> list[Path]:
    folder = home / "catalog" / "cards"
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_crafted_catalog_is_one_line(case: Case, tmp_path: Path, isolated_home: Path, cli) -> None:  # noqa: ANN001
    url = f"sqlite:///{crafted(tmp_path, case.sql)}"
    line = one_line(cli("list", env={"ZOO_CATALOG_URL": url}))
    assert line.startswith("error: " + case.says.format(url=url, version=SCHEMA_VERSION)) and case.also in line, line
    assert kept_cards(isolated_home) == []  # nothing of a refused catalog is kept for the next read


@pytest.mark.parametrize("case", [BY_ID[c] for c in EVERY_COMMAND], ids=EVERY_COMMAND)
def test_every_command_says_the_same_line(case: Case, tmp_path: Path, cli) -> None:  # noqa: ANN001
    url = f"sqlite:///{crafted(tmp_path, case.sql)}"
    for args in COMMANDS:
        line = one_line(cli(*args, env={"ZOO_CATALOG_URL": url}))
        assert line.startswith("error: " + case.says.format(url=url, version=SCHEMA_VERSION)), (args, line)


@pytest.mark.parametrize(
    ("sql", "shows"),
    [
        ("INSERT INTO aliases (model_id, name, name_lower, kind, verified) VALUES (9999, 'Orphan', 'orphan', 'short', 1);", MODEL),
        ("INSERT INTO files (model_id, path, required) VALUES (9999, '../../orphan', 1);", MODEL),
        (f"UPDATE aliases SET verified = 'yes' WHERE model_id = {ROW};", MODEL),
        (f"UPDATE sources SET text = '[/x] [bold]not markup' WHERE id = (SELECT source_id FROM metrics WHERE id = {FIRST_METRIC});",
         "[/x] [bold]not markup"),
        (f"UPDATE models SET dataset = '[/]', description = 'emoji :smile: and ünïcode' WHERE id = {ROW};", "[/]"),
    ],
    ids=["alias-of-no-model", "file-of-no-model", "boolean-as-text", "markup-in-a-source", "markup-in-a-dataset"],
)
def test_odd_but_safe_values_are_shown(sql: str, shows: str, tmp_path: Path, cli) -> None:  # noqa: ANN001
    url = f"sqlite:///{crafted(tmp_path, sql)}"
    listed = cli("list", env={"ZOO_CATALOG_URL": url})
    assert listed.code == 0 and "Traceback" not in listed.err and MODEL in listed.out, listed.err[-3000:]
    shown = cli("show", MODEL, env={"ZOO_CATALOG_URL": url})
    assert shown.code == 0 and shows in shown.out, shown.err[-3000:]


def test_an_alias_of_no_model_names_nothing(tmp_path: Path, cli) -> None:  # noqa: ANN001
    url = f"sqlite:///{crafted(tmp_path, f'UPDATE aliases SET model_id = 9999 WHERE id = {FIRST_ALIAS};')}"
    alias = "neuralmagic/oBERT-3-downstream-pruned-block4-80-QAT-squadv1"
    assert one_line(cli("show", alias, env={"ZOO_CATALOG_URL": url})).startswith(f"error: unknown model '{alias}'")


def test_a_seed_is_checked_as_its_catalog_is(tmp_path: Path, isolated_home: Path, cli) -> None:  # noqa: ANN001
    """A crafted catalog with a seed naming it as it is now (anyone can compute the identity): the seed's cards pass
    the same checks as rows do, so the path it holds is refused, not installed from."""
    db = crafted(tmp_path, set_file("path", "'../../escape'"))
    seed = json.loads(cardcache.seed_file(bundled_registry()).read_text())["cards"]
    entry = next(c for c in seed if c["name"] == MODEL)
    entry["files"][0]["path"] = "../../escape"
    identity = cardcache.path(isolated_home, db).identity
    cardcache.seed_file(db).write_text(json.dumps({"identity": identity, "cards": seed}))
    line = one_line(cli("download", MODEL, "--offline", env={"ZOO_CATALOG_URL": f"sqlite:///{db}"}))
    assert line.startswith(f"error: catalog at sqlite:///{db}: model '{MODEL}': files[0].path: must be a relative path"), line
    assert kept_cards(isolated_home) == []


def test_a_catalog_path_never_places_a_file_outside_the_model(tmp_path: Path, isolated_home: Path, cli) -> None:  # noqa: ANN001
    """``zoo download --from DIR``: a mirror's hashes file vouches for ``../evil.txt``, the catalog lists it; nothing
    is read from outside DIR's repo nor written outside ``models/<name>/``."""
    repo = tmp_path / "src" / "org" / "repo"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text("{}")
    (repo.parent / "evil.txt").write_text("owned")
    hashes = {p: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
              for p, data in (("config.json", b"{}"), ("../evil.txt", b"owned"))}
    (repo / ".zoo-hashes.json").write_text(json.dumps(hashes))
    db = crafted(tmp_path, f"DELETE FROM files WHERE model_id = {ROW}; UPDATE models SET repo = 'org/repo' WHERE id = {ROW}; "
                           f"INSERT INTO files (model_id, path, required) VALUES ({ROW}, 'config.json', 1), ({ROW}, '../evil.txt', 1);")
    result = cli("download", MODEL, "--from", str(tmp_path / "src"), "--no-validate", env={"ZOO_CATALOG_URL": f"sqlite:///{db}"})
    assert one_line(result).startswith(f"error: catalog at sqlite:///{db}: model '{MODEL}': files[1].path: must be a relative path")
    assert not (isolated_home / "models").exists() or list((isolated_home / "models").iterdir()) == []


@pytest.mark.parametrize("path", ["../outside", "/abs/olute", "a/../../b", "a\\..\\b", ""])
def test_the_store_links_nothing_outside_the_model(path: str, isolated_home: Path) -> None:
    """The store is where a path becomes a file: it refuses one that leads out on its own, whatever let it through."""
    store = Store(isolated_home)
    manifest = Manifest(MODEL, "org/repo", "main", None, "test", (ManifestFile(path, "0" * 64, 0, "catalog", "test"),))
    with pytest.raises(CatalogError, match="file path must be a relative path inside the repo"):
        store.install(manifest)
    with pytest.raises(CatalogError, match="is not a model name"):
        store.install(dataclasses.replace(manifest, name="../x", files=()))
    assert not (isolated_home / "models").exists() and not (isolated_home / "outside").exists()


def test_a_fifo_catalog_is_one_line_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "catalog.db"
    os.mkfifo(fifo)
    env = {**os.environ, "ZOO_CATALOG_URL": f"sqlite:///{fifo}"}
    try:
        proc = subprocess.run([sys.executable, "-m", "zoo", "list"], capture_output=True, text=True, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("zoo list hung on a catalog that is a FIFO")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: cannot read the catalog at sqlite:///{fifo}: it is a FIFO, not a file (check ZOO_CATALOG_URL or rebuild with `zoo catalog build`)"]


@pytest.fixture
def user_stub(isolated_home: Path) -> str:
    """One of the user's own entries (a bundled stub renamed, its aliases dropped): ``$ZOO_HOME/stubs/mine-3l.toml``."""
    text = (STUBS / "obert-3l-80.toml").read_text()
    text = re.sub(r"\[\[aliases\]\]\n(?:[^\[\n][^\n]*\n|\n)*", "", text).replace('name = "obert-3l-80"', 'name = "mine-3l"', 1)
    (isolated_home / "stubs").mkdir()
    (isolated_home / "stubs" / "mine-3l.toml").write_text(text)
    return "mine-3l"


def test_a_crafted_user_catalog_is_one_line_and_a_garbage_one_rebuilt(user_stub: str, isolated_home: Path, cli) -> None:  # noqa: ANN001
    assert cli("show", user_stub).code == 0  # compiles $ZOO_HOME/catalog/user.db
    user_db = isolated_home / "catalog" / "user.db"
    conn = sqlite3.connect(user_db)  # still fresh: its stubs digest is the stubs' own
    conn.execute("UPDATE files SET path = '../../escape' WHERE id = (SELECT min(id) FROM files)")
    conn.commit()
    conn.close()
    line = one_line(cli("download", user_stub, "--offline"))
    assert line.startswith(f"error: catalog at sqlite:///{user_db}: model '{user_stub}': files[0].path: must be a relative path"), line
    user_db.write_bytes(b"SQLite format 3\0" + b"garbage" * 100)  # not a catalog at all: stale, so compiled again
    shown = cli("show", user_stub)
    assert shown.code == 0 and user_stub in shown.out, shown.err[-3000:]
