"""Fuzzing the readers of untrusted repo files (torch zip, safetensors, config.json, tokenizer files): whatever the
bytes, only a ``ZooError`` escapes, memory stays bounded and the process does not crash.

The fuzz bodies run in a child pytest (``test_fuzz_in_child``) under an address-space limit, so a segfault or a
runaway allocation fails that test instead of killing this run. Derandomized, with a fixed example budget.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[2]
CHILD = os.environ.get("ZOO_FUZZ_CHILD") == "1"
MEMORY_LIMIT = 4 << 30
child_only = pytest.mark.skipif(not CHILD, reason="runs inside test_fuzz_in_child, where a crash fails a test")
FUZZ = settings(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def test_fuzz_in_child() -> None:
    env = {**os.environ, "ZOO_FUZZ_CHILD": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", "fuzz_body"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"child exited {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


# -- mutations -----------------------------------------------------------------------------------------------------------
def _ops(hot: list[int]) -> st.SearchStrategy:
    pos = st.one_of(st.integers(0, 1 << 20), st.sampled_from(hot or [0]).flatmap(lambda h: st.integers(h, h + 48)))
    op = st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("cut"), pos, st.just(0)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=12)),
        st.tuples(st.just("put"), pos, st.sampled_from([b"\x00", b"\xff", b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff\xff\xff\xff\x7f",
                                                          b"\x80\x00\x00\x00", b"(", b"t", b"R", b"s", b"u"])),
    )
    return st.lists(op, min_size=1, max_size=4)


def _mutate(data: bytes, ops: list[tuple[str, int, object]]) -> bytes:
    buf = bytearray(data)
    for kind, at, arg in ops:
        at %= len(buf) + 1
        if kind == "flip" and at < len(buf):
            buf[at] ^= 1 << arg  # type: ignore[operator]
        elif kind == "cut":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = arg  # type: ignore[assignment]
        elif kind == "put":
            buf[at:at + len(arg)] = arg  # type: ignore[arg-type]
    return bytes(buf)


def _only_zoo_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except ZooError:
        pass


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


# -- the base repo -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if CHILD:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from safetensors.numpy import save_file

    from zoo.pipelines.tokenizer import load_tokenizer
    from zoo.synth import SynthSpec, make_state, write_repo

    spec = SynthSpec(layers=1, hidden=8, heads=2, intermediate=16, vocab_size=400, max_positions=16)
    repo = write_repo(tmp_path_factory.mktemp("base"), spec)
    st_repo = tmp_path_factory.mktemp("st")
    shutil.copy(repo / "config.json", st_repo / "config.json")
    save_file(make_state(spec), str(st_repo / "model.safetensors"))
    tok_repo = tmp_path_factory.mktemp("tok")
    (tok_repo / "tokenizer.json").write_text(load_tokenizer(repo).to_str())
    return {"bin": repo, "st": st_repo, "tok": tok_repo}


def _hot(data: bytes, marks: tuple[bytes, ...]) -> list[int]:
    return sorted({i for m in marks for i in range(len(data)) if data.startswith(m, i)})[:64]


def _scratch(src: Path, tmp: Path, name: str, data: bytes) -> Path:
    repo = tmp / "r"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(src, repo)
    (repo / name).write_bytes(data)
    return repo


# -- torch zip ------------------------------------------------------------------------------------------------------------
@child_only
def test_fuzz_body_torch_zip_bytes(base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    from zoo.convert.repo import load_model

    data = (base["bin"] / "pytorch_model.bin").read_bytes()
    tmp = tmp_path_factory.mktemp("tz")

    @settings(FUZZ, max_examples=60)
    @given(_ops(_hot(data, (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06"))))
    def run(ops: list) -> None:
        _only_zoo_errors(lambda: load_model(_scratch(base["bin"], tmp, "pytorch_model.bin", _mutate(data, ops))))

    run()


@child_only
def test_fuzz_body_torch_pickle(base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    from zoo.convert.repo import load_model

    with zipfile.ZipFile(base["bin"] / "pytorch_model.bin") as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    pkl_name = next(n for n in entries if n.endswith("data.pkl"))
    pkl = entries[pkl_name]
    tmp = tmp_path_factory.mktemp("tp")

    @settings(FUZZ, max_examples=120)
    @given(_ops(_hot(pkl, (b"c", b"(", b"X", b"K", b"M", b"J", b"Q", b"R", b"t", b"\x89"))))
    def run(ops: list) -> None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, raw in entries.items():
                zf.writestr(name, _mutate(raw, ops) if name == pkl_name else raw)
        _only_zoo_errors(lambda: load_model(_scratch(base["bin"], tmp, "pytorch_model.bin", buf.getvalue())))

    run()


# -- safetensors ----------------------------------------------------------------------------------------------------------
@child_only
def test_fuzz_body_safetensors(base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    from zoo.convert.repo import load_model

    data = (base["st"] / "model.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    tmp = tmp_path_factory.mktemp("sf")

    @settings(FUZZ, max_examples=80)
    @given(_ops(list(range(0, header_end, max(1, header_end // 60)))))
    def run(ops: list) -> None:
        _only_zoo_errors(lambda: load_model(_scratch(base["st"], tmp, "model.safetensors", _mutate(data, ops))))

    run()


# -- config.json ----------------------------------------------------------------------------------------------------------
@child_only
def test_fuzz_body_config(base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    from zoo.convert.repo import load_model

    raw = (base["bin"] / "config.json").read_bytes()
    fields = sorted(json.loads(raw)) + ["num_labels", "id2label"]
    tmp = tmp_path_factory.mktemp("cf")

    @settings(FUZZ, max_examples=80)
    @given(st.one_of(_ops([]).map(lambda ops: _mutate(raw, ops)), JSON.map(lambda v: json.dumps(v).encode()),
                     st.dictionaries(st.sampled_from(fields), JSON | st.integers(-(1 << 40), 1 << 40), min_size=1, max_size=3)
                     .map(lambda over: json.dumps({**json.loads(raw), **over}).encode())))
    def run(config: bytes) -> None:
        _only_zoo_errors(lambda: load_model(_scratch(base["bin"], tmp, "config.json", config)))

    run()


# -- tokenizer files --------------------------------------------------------------------------------------------------------
def _tokenize(repo: Path) -> None:
    from zoo.pipelines.tokenizer import load_tokenizer

    tok = load_tokenizer(repo)
    tok.encode("Who built the tower in Paris?", "The tower was built in 1889.")


@child_only
def test_fuzz_body_tokenizer_files(base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    vocab = (base["bin"] / "vocab.txt").read_bytes()
    tok_json = (base["tok"] / "tokenizer.json").read_bytes()
    tmp = tmp_path_factory.mktemp("tk")
    cases = st.one_of(
        _ops([0, 500, 510, 520, len(vocab) - 8]).map(lambda ops: (base["bin"], "vocab.txt", _mutate(vocab, ops))),
        st.dictionaries(st.sampled_from(["do_lower_case", "strip_accents", "tokenize_chinese_chars", "model_max_length"]), JSON,
                        max_size=3).map(lambda cfg: (base["bin"], "tokenizer_config.json", json.dumps(cfg).encode())),
        _ops(_hot(tok_json, (b'"type"', b'"vocab"', b'"normalizer"', b'"post_processor"', b"[CLS]")))
        .map(lambda ops: (base["tok"], "tokenizer.json", _mutate(tok_json, ops))),
    )

    @settings(FUZZ, max_examples=100)
    @given(cases)
    def run(case: tuple[Path, str, bytes]) -> None:
        src, name, data = case
        _only_zoo_errors(lambda: _tokenize(_scratch(src, tmp, name, data)))

    run()
