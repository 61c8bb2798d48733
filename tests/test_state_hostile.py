"""state.db against a hostile environment: writers in threads and processes at once, a state.db that is no regular
file, one locked, read-only, on a full disk, written by a newer zoo or damaged row by row. Each ends in one line from
the real CLI (or a ``StateError``), never a traceback, a hang, a write somewhere else or a lost pin."""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from tests.conftest import CliResult
from zoo import state
from zoo.errors import StateError

SHA = "a" * 64
MOVE_ASIDE = "move it aside"


def one_line(r: CliResult, said: str) -> None:
    assert r.code == 1 and said in r.err and "Traceback" not in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1, r.err


def _writes(home: Path, who: str) -> None:
    for i in range(15):
        state.pin("o/r", "main", f"{who}/{i}", SHA, i, "hf", home=home)
        state.record_install({"name": who, "repo": "o/r", "revision": "main", "commit": None, "source": "hf",
                              "installed_at": "t", "verified_at": "t", "files": [{"i": i}]}, home=home)
        state.record_validation(who, {"i": i}, home=home)
        assert state.pinned("o/r", "main", f"{who}/{i}", home=home)["size"] == i


def test_threads_and_processes_write_one_fresh_state_db_at_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        procs = [pool.submit(_writes, home, f"p{i}") for i in range(2)]
        threads = [threading.Thread(target=_writes, args=(home, f"t{i}")) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in procs:
            p.result()
    assert sorted(r["name"] for r in state.installs(home=home)) == ["p0", "p1", "t0", "t1", "t2", "t3"]
    assert len(state.validations(limit=-1, home=home)) == 6 * 15
    with sqlite3.connect(home / "state.db") as con:
        assert con.execute("SELECT count(*) FROM pins").fetchone() == (6 * 15,)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


# -- not a regular file ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["directory", "fifo", "link-to-dev-null", "link-to-directory"])
def test_a_state_db_that_is_no_regular_file_is_one_line_and_untouched(cli, isolated_home: Path, tmp_path: Path, kind: str) -> None:
    db = isolated_home / "state.db"
    journal = Path("/dev/null-journal")
    had_journal = journal.exists()
    if kind == "directory":
        db.mkdir()
    elif kind == "fifo":
        os.mkfifo(db)
    elif kind == "link-to-dev-null":
        db.symlink_to("/dev/null")
    else:
        (tmp_path / "elsewhere").mkdir()
        db.symlink_to(tmp_path / "elsewhere")
    try:
        r = cli("cache", "list")
        one_line(r, "is unusable (not a regular file) (move it aside")
        assert not journal.exists() or had_journal, "SQLite wrote a journal next to /dev/null"
        assert sorted(p.name for p in isolated_home.iterdir()) == ["state.db"]
    finally:
        if journal.exists() and not had_journal:
            journal.unlink()


# -- locks -----------------------------------------------------------------------------------------------------------

@pytest.fixture
def locked(isolated_home: Path) -> Iterator[Path]:
    """Another process holding state.db in an EXCLUSIVE transaction until the test ends."""
    state.installs(home=isolated_home)
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               f"con = sqlite3.connect({str(isolated_home / 'state.db')!r}, isolation_level=None)\n"
                               "con.execute('BEGIN EXCLUSIVE'); print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    yield isolated_home
    holder.stdin.close()
    holder.wait(timeout=30)


def test_a_lock_held_past_the_wait_is_one_state_error(locked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "LOCK_WAIT", 0.5)
    for call in (lambda: state.installs(home=locked), lambda: state.pin("o/r", "main", "x", SHA, 1, "hf", home=locked)):
        with pytest.raises(StateError, match="database is locked") as err:
            call()
        assert "another zoo process held it for over 0.5 s" in err.value.hint and MOVE_ASIDE not in err.value.hint


def test_a_lock_held_past_the_wait_is_one_line_from_the_cli(locked: Path) -> None:
    code = "import sys; from zoo import state; state.LOCK_WAIT = 1.0; from zoo.cli import main; sys.argv[0] = 'zoo'; main()"
    proc = subprocess.run([sys.executable, "-c", code, "cache", "list"], capture_output=True, text=True, timeout=120)
    one_line(CliResult(proc.returncode, proc.stdout, proc.stderr), "(database is locked) (another zoo process held it for over 1 s")


def test_ctrl_c_while_waiting_for_the_lock_ends_at_once(locked: Path) -> None:
    """SQLite's busy wait sleeps in C, deaf to SIGINT: a 60 s wait in one call kept Ctrl-C waiting ~60 s."""
    child = subprocess.Popen([sys.executable, "-m", "zoo", "cache", "list"], stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # the child is waiting for the lock by now (it cannot get it, however long this takes)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        err = child.communicate(timeout=30)[1]
    finally:
        child.kill()
    assert time.monotonic() - sent < 5, "Ctrl-C waited for SQLite's lock timeout"
    assert child.returncode == 130 and "Traceback" not in err, err


# -- an unwritable home, a full disk ----------------------------------------------------------------------------------

@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a writable directory, the same directory read-only): a read-only bind mount as root, chmod otherwise."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    state.pin("o/r", "main", "x", SHA, 1, "hf", home=src / "full")
    (src / "empty").mkdir()
    if os.geteuid() != 0:
        for d in (src, src / "full", src / "empty"):
            os.chmod(d, 0o555)
        yield src, src
        for d in (src, src / "full", src / "empty"):
            os.chmod(d, 0o755)
        return
    if subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode or \
            subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode:
        subprocess.run(["umount", str(ro)], capture_output=True)
        pytest.skip("root without permission to bind-mount: no way to make a directory unwritable to root")
    yield src, ro
    subprocess.run(["umount", str(ro)], check=True)


def test_a_read_only_state_db_reads_and_refuses_writes_with_the_right_hint(read_only: tuple[Path, Path]) -> None:
    _, ro = read_only
    assert state.pinned("o/r", "main", "x", home=ro / "full")["sha256"] == SHA
    for home in (ro / "full", ro / "empty"):  # with a state.db, and without one (SQLite cannot even create it)
        with pytest.raises(StateError) as err:
            state.pin("o/r", "main", "y", SHA, 1, "hf", home=home)
        assert "read-only file system" in err.value.hint and MOVE_ASIDE not in err.value.hint, err.value.one_line()


def test_a_full_disk_during_a_write_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    """The file may grow by 4 KiB at most (RLIMIT_FSIZE in a child): a large record cannot be written."""
    for i in range(40):
        state.record_validation("m", {"pad": "x" * 1000, "i": i}, home=tmp_path)
    db = tmp_path / "state.db"
    before = db.read_bytes()
    limit = len(before) + 4096

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = (f"from zoo import state; from zoo.errors import StateError\ntry:\n state.record_validation('m', {{'pad': 'y' * 100000}}, "
            f"home={str(tmp_path)!r})\nexcept StateError as exc:\n print(exc.one_line())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=cap)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "is unusable" in proc.stdout and "the disk is full or failing" in proc.stdout and MOVE_ASIDE not in proc.stdout, proc.stdout
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]
    assert len(state.validations(limit=-1, home=tmp_path)) == 40


# -- a newer zoo's schema, a missing table or column, damaged rows -----------------------------------------------------

def _sql(home: Path, *statements: str) -> None:
    state.installs(home=home)
    with sqlite3.connect(home / "state.db") as con:
        for sql in statements:
            con.execute(sql)
    con.close()


def test_columns_a_newer_zoo_added_are_left_alone(cli, isolated_home: Path) -> None:
    _sql(isolated_home, "ALTER TABLE installs ADD COLUMN signer TEXT", "ALTER TABLE pins ADD COLUMN signer TEXT NOT NULL DEFAULT 'k'",
         "INSERT INTO installs VALUES ('m', 'o/r', 'main', NULL, 'hf', 't', 't', '[]', 'k')")
    assert state.installs(home=isolated_home)[0] == {"name": "m", "repo": "o/r", "revision": "main", "commit": None, "source": "hf",
                                                     "installed_at": "t", "verified_at": "t", "files": []}
    state.pin("o/r", "main", "x", SHA, 1, "hf", home=isolated_home)
    assert state.pinned("o/r", "main", "x", home=isolated_home)["sha256"] == SHA
    assert cli("cache", "list").code == 0


def test_a_column_a_newer_zoo_requires_is_one_line(isolated_home: Path) -> None:
    _sql(isolated_home, "DROP TABLE pins", "CREATE TABLE pins (repo TEXT, revision TEXT, path TEXT, sha256 TEXT, size INTEGER, "
         "source TEXT, pinned_at TEXT, signer TEXT NOT NULL, PRIMARY KEY (repo, revision, path))")
    with pytest.raises(StateError, match="NOT NULL constraint failed: pins.signer"):
        state.pin("o/r", "main", "x", SHA, 1, "hf", home=isolated_home)


def test_a_missing_table_is_made_again(isolated_home: Path) -> None:
    _sql(isolated_home, "DROP TABLE pins")
    state._created.clear()  # a new process
    state.pin("o/r", "main", "x", SHA, 1, "hf", home=isolated_home)
    assert state.pinned("o/r", "main", "x", home=isolated_home)["sha256"] == SHA


def test_a_missing_column_is_one_line_not_its_name_as_a_value(cli, isolated_home: Path) -> None:
    """SQLite reads an unknown "column" as the string 'column': a pins table without "path" must not match every path."""
    _sql(isolated_home, "DROP TABLE pins", "CREATE TABLE pins (repo TEXT, revision TEXT, sha256 TEXT, size INTEGER, source TEXT, "
         "pinned_at TEXT)", f"INSERT INTO pins VALUES ('o/r', 'main', '{SHA}', 1, 'hf', 't')",
         "DROP TABLE installs", "CREATE TABLE installs (name TEXT PRIMARY KEY, repo TEXT)", "INSERT INTO installs VALUES ('m', 'o/r')")
    with pytest.raises(StateError, match=r"no such column: pins\.path"):
        state.pinned("o/r", "main", "path", home=isolated_home)
    one_line(cli("cache", "list"), "no such column: installs.")


@pytest.mark.parametrize("files", ["not json", "[" * 100_000 + "]" * 100_000, b"\xff\xfe", 5],
                         ids=["not-json", "nested-100k-deep", "bytes", "integer"])
def test_a_row_that_does_not_decode_is_one_line(cli, isolated_home: Path, files: object) -> None:
    state.installs(home=isolated_home)
    with sqlite3.connect(isolated_home / "state.db") as con:
        con.execute("INSERT INTO installs VALUES ('m', 'o/r', 'main', NULL, 'hf', 't', 't', ?)", (files,))
    con.close()
    one_line(cli("cache", "list"), "is unusable (a row of installs does not decode)")
