"""``zoo run`` in a pipe (JSON Lines, streamed), status lines for long waits, and mistakes that get one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.cli.conftest import MODEL
from zoo.config import bundled_registry

CONTEXT = "The Broncos beat the Panthers in California."


def one_line_error(res) -> None:  # noqa: ANN001
    assert res.code == 1, res.err
    assert res.err.startswith("error: ") and res.err.count("\n") == 1 and "Traceback" not in res.err, res.err


def test_json_lines_one_object_per_input_streamed_as_answered(qa_repo):
    """The first answer is on stdout while stdin is still open: nothing waits for EOF."""
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "run", str(qa_repo), "--json", "--top-k", "2"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps({"id": "q-1", "question": "Who won?", "context": CONTEXT}) + "\n\n")
    proc.stdin.flush()
    first = json.loads(proc.stdout.readline())  # answered before the next line is even written
    proc.stdin.write(json.dumps({"question": "Where?", "context": CONTEXT}) + "\n")
    proc.stdin.close()
    second = json.loads(proc.stdout.readline())
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert first["line"] == 1 and first["id"] == "q-1" and len(first["result"]) == 2
    assert second["line"] == 3 and "id" not in second and len(second["result"]) == 2


def test_one_input_has_the_same_shape_as_many(cli, qa_repo):
    one = cli("run", str(qa_repo), "--question", "Who won?", "--context", CONTEXT, "--json")
    assert one.code == 0, one.err
    rec = json.loads(one.out)
    assert rec["line"] == 1 and {"answer", "score", "start", "end"} <= set(rec["result"])
    assert "\n" not in one.out.strip()  # compact


def test_long_context_says_how_many_windows(cli, qa_repo, tmp_path):
    ctx = tmp_path / "long.txt"
    ctx.write_text("The Broncos beat the Panthers. " * 300)
    res = cli("run", str(qa_repo), "--question", "Who?", "--context-file", str(ctx), "--json")
    assert res.code == 0, res.err
    assert "answering: " in res.err and " windows" in res.err


def test_input_mistakes_are_one_line(cli, qa_repo, mnli_repo, tmp_path):
    binary = tmp_path / "bin.dat"
    binary.write_bytes(b"\x00\x01\xff binary")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café".encode("latin-1"))
    for args, stdin, said in [
        (("--question", "q", "--context-file", str(binary)), None, "binary"),
        (("--question", "q", "--context-file", str(latin)), None, "not UTF-8"),
        ((), "", "stdin is empty"),
        ((), "\n  \n", "stdin is empty"),
        ((), b"\xff\xfe\n".decode("latin-1"), None),
        ((), '{"question": 5, "context": "c"}\n', "'question' must be a string"),
        ((), '[1, 2]\n', "not an object"),
        ((), '{"question": "q"\n', "not JSON"),
    ]:
        res = cli("run", str(qa_repo), "--json", *args, input=stdin)
        one_line_error(res)
        assert said is None or said in res.err, res.err
    res = subprocess.run([sys.executable, "-m", "zoo", "run", str(qa_repo), "--json"], input=b"\xff\xfe\n", capture_output=True)
    assert res.returncode == 1 and res.stderr.decode() == "error: input line 1 is not UTF-8 text\n"
    one_line_error(cli("run", str(mnli_repo), "--json", input='{"text": ["a"]}\n'))
    missing = cli("run", str(tmp_path / "no-such-dir"), "--text", "x")
    one_line_error(missing)
    assert "no such directory" in missing.err and "unknown model" not in missing.err
    limit = cli("eval", str(qa_repo), "--squad", str(latin), "--limit", "0")
    assert limit.code == 2 and "has no questions" not in limit.err and "--limit" in limit.err
    for env in ({"ZOO_RETRIES": "abc"}, {"ZOO_THREADS": "0"}, {"ZOO_LOCK_TIMEOUT": "soon"}):
        one_line_error(cli("download", MODEL, "--dry-run", env=env))
    threads = cli("run", str(qa_repo), "--text", "x", "--threads", "0")
    assert threads.code == 2 and "--threads" in threads.err and "Traceback" not in threads.err


def test_refused_connection_says_each_retry(cli):
    res = cli("download", MODEL, env={"HF_ENDPOINT": "http://127.0.0.1:9", "ZOO_RETRIES": "2"})
    one_line_error_lines = [line for line in res.err.splitlines() if line.startswith("error: ")]
    assert res.code == 1 and len(one_line_error_lines) == 1
    assert "retry 1/2 in " in res.err and "retry 2/2 in " in res.err and "cannot reach" in res.err


def test_not_installed_model_says_it_downloads_first(cli, mirror):
    res = cli("run", MODEL, "--question", "Who won?", "--context", CONTEXT, "--json")
    assert res.code == 0, res.err
    assert f"{MODEL} is not installed: downloading it first" in res.err


def test_waiting_for_another_download_is_said(cli, mirror, isolated_home):
    from zoo.catalog import resolve
    from zoo.fetch.store import Store

    commit = cli("download", MODEL, "--dry-run", "--json").json()["commit"]
    store = Store(isolated_home)
    card = resolve(MODEL)
    with store.lock(store.key(card.repo, commit, "config.json"), "held by this test"):
        res = cli("download", MODEL, "--no-validate", env={"ZOO_LOCK_TIMEOUT": "1"})
    assert res.code == 1
    assert f"waiting for another zoo download of {MODEL}/config.json (lock held since " in res.err
    assert res.err.splitlines()[-1].startswith("error: another process has been fetching")


def test_cache_rm_frees_the_blobs_only_that_model_used(cli, mirror, isolated_home):
    assert cli("download", MODEL, "--no-validate").code == 0
    assert cli("download", "obert-3l-90", "--no-validate").code == 0
    before = cli("cache", "size", "--json").json()["blob_bytes"]
    res = cli("cache", "rm", "obert-3l-90", "--json")
    assert res.code == 0, res.err
    freed = res.json()[0]["freed_bytes"]
    after = cli("cache", "size", "--json").json()
    assert freed > 0 and after["blob_bytes"] == before - freed and after["unreferenced_bytes"] == 0
    assert cli("verify", MODEL).code == 0  # the files it shares with the removed model are still there
    gone = cli("cache", "rm", "obert-3l-90")
    one_line_error(gone)
    assert "not installed" in gone.err and "zoo download" not in gone.err


def test_bench_history_tells_machines_apart(cli, qa_repo):
    res = cli("bench", str(qa_repo), "--engines", "sparse", "--runs", "2", "--seq", "16", "--json")
    assert res.code == 0, res.err
    assert "bench " in res.err  # it says what it runs before the silence
    rows = cli("bench", "--history", "--json").json()
    extra = rows[0]["extra"]
    assert {"cpu", "kernels", "cores", "load_avg", "zoo_version"} <= set(extra) and rows[0]["threads"] >= 1


def test_ctrl_c_says_what_was_interrupted(qa_repo):
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "bench", str(qa_repo), "--engines", "sparse", "--runs", "100000", "--seq", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "bench " not in (line := proc.stderr.readline()) and time.monotonic() < deadline:
        pass
    assert "bench " in line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "interrupted zoo bench"  # no partial-download story outside a download


@pytest.fixture
def read_only_home(isolated_home, tmp_path, monkeypatch, cli, mirror):  # noqa: ANN001, ANN201
    """ZOO_HOME holding an installed model, then made read-only. Root ignores chmod, so as root a read-only bind
    mount (needs CAP_SYS_ADMIN); as another user chmod 0o555 on every directory."""
    assert cli("download", MODEL, "--no-validate").code == 0
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        for d, _, _ in os.walk(isolated_home):
            os.chmod(d, 0o555)
        ro = isolated_home
    else:
        mounted = subprocess.run(["mount", "--bind", str(isolated_home), str(ro)], capture_output=True)
        if mounted.returncode != 0 or subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode:
            subprocess.run(["umount", str(ro)], capture_output=True)
            pytest.skip("running as root without permission to bind-mount: no way to make a directory unwritable to root")
    with pytest.raises(OSError):
        (ro / "probe").write_text("x")
    monkeypatch.setenv("ZOO_HOME", str(ro))
    yield ro
    if os.geteuid() == 0:
        subprocess.run(["umount", str(ro)], check=True)
    else:
        for d, _, _ in os.walk(isolated_home):
            os.chmod(d, 0o755)


def test_read_only_home_is_one_line_and_reads_still_work(cli, read_only_home, qa_repo, tmp_path):
    assert cli("cache", "list").code == 0
    catalog = tmp_path / "registry-copy.db"  # a catalog whose cards were never kept: they cannot be kept now
    shutil.copyfile(bundled_registry(), catalog)
    listed = cli("list", env={"ZOO_CATALOG_URL": f"sqlite:///{catalog}"})
    assert listed.code == 0 and MODEL in listed.out and listed.err == "", listed.err
    for args in (("verify", MODEL), ("download", "obert-3l-90", "--no-validate"), ("download", MODEL)):
        res = cli(*args)
        if res.code:
            one_line_error(res)
            assert "writable directory" in res.err, res.err
    bench = cli("bench", str(qa_repo), "--engines", "sparse", "--runs", "2", "--seq", "16")
    assert bench.code == 0 and "sparse" in bench.out  # the results are printed
    assert "warning: the results were not saved to the history" in bench.err
