"""`zoo download` end to end against the local mirror: verified, recorded, idempotent, inspectable."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from tests.fetch.conftest import MODEL

FILES = {"config.json", "pytorch_model.bin", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "recipe.yaml"}


def _installs(home: Path) -> dict[str, dict]:
    con = sqlite3.connect(home / "state.db")
    rows = con.execute('select name, repo, "commit", files, verified_at from installs').fetchall()
    return {r[0]: {"repo": r[1], "commit": r[2], "files": json.loads(r[3]), "verified_at": r[4]} for r in rows}


def test_download_verifies_records_and_second_run_fetches_nothing(cli, mirror, isolated_home):
    first = cli("download", MODEL, "--json")
    assert first.code == 0, first.err
    record = first.json()
    assert {f["path"] for f in record["files"]} == FILES  # tokenizer.json is optional and absent from this repo
    for f in record["files"]:
        assert f["sha256"] == mirror.sha256(MODEL, f["path"])  # hashed independently of the code under test
        assert f["size"] == mirror.size(MODEL, f["path"])
        assert f["action"] == "download"
        installed = isolated_home / "models" / MODEL / f["path"]
        assert hashlib.sha256(installed.read_bytes()).hexdigest() == f["sha256"]
    assert record["fetched"] == sum(mirror.size(MODEL, p) for p in FILES)
    assert set(record["pinned_on_first_use"]) == FILES  # the catalog has no hashes for these repos
    by_path = {f["path"]: f for f in record["files"]}
    assert by_path["pytorch_model.bin"]["verified_by"].startswith("source sha256")  # LFS-style: sha256 from the listing
    assert by_path["config.json"]["verified_by"].startswith("source git oid")  # small file: git blob id
    state = _installs(isolated_home)[MODEL]
    assert state["commit"] == record["commit"] and len(state["commit"]) == 40
    assert {f["path"]: f["sha256"] for f in state["files"]} == {f["path"]: f["sha256"] for f in record["files"]}

    gets_before = len(mirror.faults.gets)
    second = cli("download", MODEL)
    assert second.code == 0, second.err
    assert "nothing fetched" in second.out
    assert len(mirror.faults.gets) == gets_before


def test_dry_run_reports_sizes_and_writes_nothing(cli, mirror, isolated_home):
    res = cli("download", MODEL, "--dry-run", "--json")
    assert res.code == 0, res.err
    plan = {f["path"]: f for f in res.json()["files"]}
    assert plan["pytorch_model.bin"]["size"] == mirror.size(MODEL, "pytorch_model.bin")
    assert {f["action"] for f in plan.values()} == {"download"}
    assert mirror.faults.gets == []
    assert not (isolated_home / "manifests").exists() and not (isolated_home / "blobs").exists()
    table = cli("download", MODEL, "--dry-run")
    assert "would fetch 6 of 6 files" in table.out


def test_verify_detects_a_corrupted_blob_and_uninstalls(cli, mirror, isolated_home):
    assert cli("download", MODEL).code == 0
    ok = cli("verify", "--json")
    assert ok.code == 0 and ok.json()[0]["ok"] is True
    blob = (isolated_home / "models" / MODEL / "vocab.txt").resolve()
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"the", b"teh", 1))
    bad = cli("verify", MODEL)
    assert bad.code == 1
    assert "vocab.txt: sha256 mismatch" in bad.out
    assert bad.err.startswith("error: verification failed for obert-3l-80-quant") and bad.err.count("\n") == 1
    assert not blob.exists()
    assert "not installed" in cli("export", MODEL, "-o", str(isolated_home / "x.onnx")).err
    again = cli("download", MODEL, "--json")  # repairs: only the bad file is fetched again
    assert again.code == 0
    assert {f["path"] for f in again.json()["files"] if f["action"] == "download"} == {"vocab.txt"}


def test_cache_list_size_rm_prune(cli, mirror, isolated_home):
    assert cli("download", MODEL, "obert-3l-90").code == 0
    listing = cli("cache", "list", "--json").json()
    assert [m["name"] for m in listing["models"]] == ["obert-3l-80-quant", "obert-3l-90"]
    size = cli("cache", "size", "--json").json()
    # identical files of the two repos (tokenizer files, config) are stored once: the store is content-addressed
    unique = {hashlib.sha256(p.read_bytes()).hexdigest(): p.stat().st_size
              for name in (MODEL, "obert-3l-90") for p in mirror.repo_dir(name).iterdir()}
    assert len(unique) < 6 + 5
    assert size["blob_bytes"] == sum(unique.values())
    assert size["unreferenced_bytes"] == 0
    assert cli("cache", "rm", "obert-3l-90").code == 0  # frees the blobs only that model used; the shared ones stay
    after = cli("cache", "size", "--json").json()
    assert after["unreferenced_bytes"] == 0 and after["blob_bytes"] == sum(mirror.size(MODEL, p) for p in FILES)
    assert cli("cache", "prune", "--json").json()["bytes"] == 0  # nothing left for prune
    assert cli("download", MODEL).out.count("nothing fetched") == 1  # the other model was untouched
    missing = cli("cache", "rm", "obert-3l-90")
    assert missing.code == 1 and "not installed" in missing.err


def test_unknown_model_and_unreachable_hub_are_one_line_errors(cli, monkeypatch):
    unknown = cli("download", "obert-3l-85")
    assert unknown.code == 1 and unknown.err.startswith("error: unknown model 'obert-3l-85'")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("ZOO_RETRIES", "1")
    down = cli("download", MODEL)
    assert down.code == 1 and "Traceback" not in down.err
    assert [line for line in down.err.splitlines() if not line.startswith("retry ")] == [down.err.splitlines()[-1]]  # status, then one error
    assert "cannot reach the Hub" in down.err


def test_reuses_the_users_hugging_face_cache_without_network(cli, mirror, monkeypatch):
    from huggingface_hub import snapshot_download

    from zoo import config
    from zoo.catalog import resolve

    snapshot_download(resolve(MODEL).repo, endpoint=mirror.url, cache_dir=config.hf_cache_dir())  # as transformers would
    mirror.stop()
    res = cli("download", MODEL, "--offline", "--json")
    assert res.code == 0, res.err
    files = res.json()["files"]
    assert {f["action"] for f in files} == {"hf-cache"}
    assert all(f["sha256"] == mirror.sha256(MODEL, f["path"]) for f in files)


def test_offline_with_and_without_the_model_cached(cli, mirror, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    missing = cli("download", MODEL)
    assert missing.code == 1 and missing.err.count("\n") == 1
    assert "not in the cache" in missing.err and "zoo mirror pull" in missing.err
    assert mirror.faults.gets == []
    monkeypatch.delenv("ZOO_OFFLINE")
    assert cli("download", MODEL).code == 0
    mirror.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = cli("download", MODEL)
    assert cached.code == 0 and "nothing fetched" in cached.out


def test_a_changed_upstream_file_is_refused_against_its_pin(cli, private_tree, isolated_home):
    from tests.fetch.conftest import start_mirror

    m = start_mirror(private_tree)
    try:
        assert cli("download", MODEL, "--mirror", m.url).code == 0
        assert cli("cache", "rm", MODEL).code == 0 and cli("cache", "prune").code == 0
        vocab = m.repo_dir() / "vocab.txt"
        vocab.write_text(vocab.read_text().replace("the", "teh", 1))
        res = cli("download", MODEL, "--mirror", m.url)
    finally:
        m.stop()
    assert res.code == 1
    assert "vocab.txt: sources disagree" in res.err and "pinned" in res.err
    assert not (isolated_home / "manifests" / f"{MODEL}.json").exists()
