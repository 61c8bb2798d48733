"""Crafted hostile checkpoints (issue 13, section 2): each is refused with one ``CheckpointError`` line, never a
crash, a hang, a huge allocation or weights made of bytes from outside their storage.

Cases that crashed the interpreter run in a child process, so a regression fails the test instead of pytest.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.convert.test_torchzip import _archive, _state_pickle, _tensor
from zoo.convert.bert import BertConfig
from zoo.convert.repo import load_model
from zoo.convert.torchsave import _global, save_state_dict
from zoo.convert.torchzip import read_state_dict
from zoo.errors import CheckpointError, ZooError
from zoo.synth import SynthSpec, float_state

ROOT = Path(__file__).resolve().parents[2]


def _in_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _read_in_child(path: Path) -> subprocess.CompletedProcess:
    return _in_child("import sys\nfrom zoo.convert.torchzip import read_state_dict\nfrom zoo.errors import CheckpointError\n"
                     f"try:\n    read_state_dict({str(path)!r})\nexcept CheckpointError as exc:\n    sys.exit('refused: ' + str(exc))\n")


def _refused(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])  # not 0 (accepted) nor -11 (segfault)
    assert "Traceback" not in proc.stderr and match in proc.stderr, proc.stderr[-2000:]


def _zoo_inspect(repo: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "ZOO_HOME": str(tmp_path / "home"), "ZOO_OFFLINE": "1", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "zoo", "inspect", str(repo)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env)


def _one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode not in (0, -11, 139), (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], proc.stderr[-2000:]


# -- one storage key, two declared sizes ------------------------------------------------------------------------------
def _aliased_sizes(path: Path, second_numel: int, second_size: tuple[int, ...]) -> Path:
    pkl = _state_pickle({"a": _tensor("0", 4, 0, (4,), (1,)),
                         "b": _tensor("0", second_numel, 0, second_size, (second_size[1], 1) if len(second_size) == 2 else (1,))})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
        zf.writestr("archive/data/zz_neighbour", np.full(64, 7.0, np.float32).tobytes())
    return path


def test_second_declaration_larger_than_storage_segfaulted(tmp_path: Path) -> None:
    path = _aliased_sizes(tmp_path / "seg.bin", 1 << 24, (4096, 4096))
    _refused(_read_in_child(path), "holds 4 elements, the pickle declares 16777216")


def test_second_declaration_read_neighbouring_bytes(tmp_path: Path) -> None:
    path = _aliased_sizes(tmp_path / "peek.bin", 20, (20,))
    with pytest.raises(CheckpointError, match="holds 4 elements, the pickle declares 20"):
        read_state_dict(path)


def test_storage_declared_with_two_dtypes(tmp_path: Path) -> None:
    pkl = _state_pickle({"a": _tensor("0", 2, 0, (2,), (1,)), "b": _tensor("0", 1, 0, (1,), (1,), storage="LongStorage")})
    with pytest.raises(CheckpointError, match="declared as float32 and as <i8"):
        read_state_dict(_archive(tmp_path / "d.bin", pkl, {"0": np.zeros(2, np.float32).tobytes()}))


def test_shared_storage_views_still_read(tmp_path: Path) -> None:
    pkl = _state_pickle({"a": _tensor("0", 6, 0, (2, 3), (3, 1)), "b": _tensor("0", 6, 2, (2, 2), (1, 2))})
    sd = read_state_dict(_archive(tmp_path / "ok.bin", pkl, {"0": np.arange(6, dtype=np.float32).tobytes()}))
    assert np.array_equal(sd["b"], np.arange(6, dtype=np.float32)[2:].reshape(2, 2, order="F"))


# -- stride-0 and aliased views -------------------------------------------------------------------------------------
def test_stride0_embedding_from_two_bytes_refused(tmp_path: Path) -> None:
    pkl = _state_pickle({"emb": _tensor("0", 1, 0, (2_000_000, 128), (0, 0), storage="HalfStorage")})
    with pytest.raises(CheckpointError, match="materialize far more bytes than the file holds"):
        read_state_dict(_archive(tmp_path / "s0.bin", pkl, {"0": b"\0\0"}))


def test_many_aliased_views_of_one_storage_refused(tmp_path: Path) -> None:
    n = 1 << 20  # a 4 MiB storage viewed whole by 100 tensors: 400 MiB from a 4 MiB file
    pkl = _state_pickle({f"t{i}": _tensor("0", n, 0, (n,), (1,)) for i in range(100)})
    with pytest.raises(CheckpointError, match="materialize far more"):
        read_state_dict(_archive(tmp_path / "alias.bin", pkl, {"0": bytes(4 * n)}))


def test_small_broadcast_buffer_is_accepted(tmp_path: Path) -> None:
    pkl = _state_pickle({"position_ids": _tensor("0", 512, 0, (1, 512), (0, 1), storage="LongStorage")})
    sd = read_state_dict(_archive(tmp_path / "pos.bin", pkl, {"0": np.arange(512, dtype=np.int64).tobytes()}))
    assert sd["position_ids"].shape == (1, 512)


# -- pickle depth, compression methods, byte order -------------------------------------------------------------------
def test_deeply_nested_pickle_segfaulted(tmp_path: Path) -> None:
    n = 200_000
    pkl = b"\x80\x02" + _global("collections", "OrderedDict") + b")R" + b"(" * n + b"t" * n + b"Ns."  # a 200,000-deep key
    path = _archive(tmp_path / "deep.bin", pkl, {})
    _refused(_read_in_child(path), "nests objects more than 100 deep")


def _set_method(path: Path, member: str, method: int) -> None:
    """Rewrite the compression method of ``member`` in its local and central headers."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for sig, field, name_at in ((b"PK\x03\x04", 8, 30), (b"PK\x01\x02", 10, 46)):
        at = data.find(sig)
        while at != -1:
            if data[at + name_at: at + name_at + len(name)] == name:
                struct.pack_into("<H", data, at + field, method)
            at = data.find(sig, at + 4)
    path.write_bytes(bytes(data))


def test_unsupported_compression_method(tmp_path: Path) -> None:
    path = _archive(tmp_path / "m.bin", _state_pickle({"w": _tensor("0", 1, 0, (1,), (1,))}), {"0": b"\0" * 4})
    _set_method(path, "archive/data.pkl", 99)
    with pytest.raises(CheckpointError, match="compression method 99"):
        read_state_dict(path)


def test_big_endian_storages_refused(tmp_path: Path) -> None:
    path = tmp_path / "be.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _state_pickle({"w": _tensor("0", 1, 0, (1,), (1,))}))
        zf.writestr("archive/byteorder", b"big")
        zf.writestr("archive/data/0", b"\0" * 4)
    with pytest.raises(CheckpointError, match="'big'-endian"):
        read_state_dict(path)


# -- config.json -------------------------------------------------------------------------------------------------------
def _repo_with_config(repo_factory, tmp_path: Path, raw: bytes | None = None, **fields: object) -> Path:  # noqa: ANN001
    repo = tmp_path / "repo"
    shutil.copytree(repo_factory(layers=1), repo)
    if raw is None:
        cfg = json.loads((repo / "config.json").read_text())
        cfg.update(fields)
        raw = json.dumps(cfg).encode()
    (repo / "config.json").write_bytes(raw)
    return repo


CONFIG_CASES = {
    "heads_zero": ({"num_attention_heads": 0}, "num_attention_heads must be an integer from 1"),
    "heads_negative": ({"num_attention_heads": -4}, "num_attention_heads must be an integer from 1"),
    "heads_not_dividing": ({"num_attention_heads": 5}, "not divisible by num_attention_heads 5"),
    "num_labels_huge": ({"num_labels": 10**9}, "num_labels must be an integer from 1 to 65536"),
    "hidden_string": ({"hidden_size": "64"}, "hidden_size must be an integer"),
    "layers_bool": ({"num_hidden_layers": True}, "num_hidden_layers must be an integer"),
    "eps_nan": ({"layer_norm_eps": math.nan}, "layer_norm_eps must be a finite number"),
    "eps_inf": ({"layer_norm_eps": math.inf}, "layer_norm_eps must be a finite number"),
    "eps_negative": ({"layer_norm_eps": -1e-12}, "layer_norm_eps must be a finite number"),
    "id2label_list": ({"id2label": ["a", "b"]}, "id2label must be an object"),
    "id2label_gaps": ({"id2label": {"0": "a", "7": "b"}}, "id2label must map"),
    "architectures_string": ({"architectures": "BertForQuestionAnswering"}, "architectures must be a list"),
    "vocab_too_big_for_checkpoint": ({"vocab_size": 1 << 24}, "has shape (1200, 64), config.json implies (16777216, 64)"),
}
RAW_CASES = {
    "json_list": (b"[1, 2, 3]", "holds a JSON list, not an object"),
    "not_utf8": (b'{"hidden_size": "\xff\xfe"}', "config.json is not UTF-8 text"),
    "5000_digits": (b'{"hidden_size": ' + b"9" * 5000 + b"}", "config.json is not valid JSON"),
    "nested_100k": (b"[" * 100_000 + b"]" * 100_000, "config.json is not valid JSON"),
    "truncated": (b'{"hidden_size": 6', "config.json is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_field_refused(repo_factory, tmp_path: Path, case: str) -> None:  # noqa: ANN001
    fields, match = CONFIG_CASES[case]
    with pytest.raises(CheckpointError, match=match.replace("(", r"\(").replace(")", r"\)")):
        load_model(_repo_with_config(repo_factory, tmp_path, **fields))


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_config_file_refused(repo_factory, tmp_path: Path, case: str) -> None:  # noqa: ANN001
    raw, match = RAW_CASES[case]
    with pytest.raises(CheckpointError, match=match):
        load_model(_repo_with_config(repo_factory, tmp_path, raw=raw))


def test_config_num_labels_and_id2label_accepted() -> None:
    base = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 1200}
    assert BertConfig.from_dict({**base, "num_labels": 3}).labels == ("LABEL_0", "LABEL_1", "LABEL_2")
    assert BertConfig.from_dict({**base, "id2label": {"1": "yes", "0": "no"}}).labels == ("no", "yes")


# -- NaN / inf weights: inspect warns, compile refuses -----------------------------------------------------------------
def _repo_with_nan(repo_factory, tmp_path: Path) -> Path:  # noqa: ANN001
    repo = tmp_path / "nan"
    shutil.copytree(repo_factory(layers=1), repo)
    sd = float_state(SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128))
    sd["bert.encoder.layer.0.intermediate.dense.weight"][3, 5] = np.nan
    sd["bert.embeddings.LayerNorm.weight"][0] = np.inf
    save_state_dict(sd, repo / "pytorch_model.bin")
    return repo


def test_nonfinite_weights_are_named_and_refused_by_compile(repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    from zoo.convert.inspect import inspect_model
    from zoo.runtime.engine import compile

    model = load_model(_repo_with_nan(repo_factory, tmp_path))
    assert set(model.nonfinite) == {"bert.encoder.layer.0.intermediate.dense.weight", "bert.embeddings.LayerNorm.weight"}
    warnings = inspect_model(model).warnings
    assert any("intermediate.dense.weight' holds NaN or inf" in w for w in warnings), warnings
    with pytest.raises(CheckpointError, match=r"holds NaN or inf values; refusing to run"):
        compile(model, threads=1)


def test_finite_model_has_no_findings(repo_factory) -> None:  # noqa: ANN001
    model = load_model(repo_factory(layers=1))
    assert model.nonfinite == ()
    model.require_finite()


# -- tokenizer files -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,raw,match", [
    ("vocab.txt", b"[PAD]\n\xff\xfe\n[UNK]\n", "vocab.txt is not UTF-8"),
    ("tokenizer_config.json", b"[1]", "not an object"),
    ("tokenizer_config.json", b'{"do_lower_case": "yes"}', "do_lower_case must be true, false or null"),
    ("tokenizer_config.json", b"[" * 100_000, "not valid JSON"),
    ("tokenizer_config.json", b'{"x": "\xff"}', "not UTF-8"),
    ("tokenizer.json", b'{"model": {"type": "WordPiece", "vocab": 3}}', "cannot be loaded"),
    ("tokenizer.json", b"\xff\xfe", "not UTF-8"),
])
def test_tokenizer_file_refused(repo_factory, tmp_path: Path, name: str, raw: bytes, match: str) -> None:  # noqa: ANN001
    from zoo.pipelines.tokenizer import load_tokenizer

    repo = tmp_path / "tok"
    shutil.copytree(repo_factory(layers=1), repo)
    (repo / name).write_bytes(raw)
    with pytest.raises(ZooError, match=match):
        load_tokenizer(repo)


# -- the CLI: one `error:` line and a non-zero exit -------------------------------------------------------------------
def test_cli_inspect_one_line_errors(repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    cases = {
        "seg": ("pytorch_model.bin", _aliased_sizes(tmp_path / "seg.bin", 1 << 24, (4096, 4096)).read_bytes(), "the pickle declares"),
        "heads0": ("config.json", None, "num_attention_heads"),
        "nest": ("pytorch_model.bin", _archive(tmp_path / "deep.bin", b"\x80\x02}" + b"(" * 200_000 + b"t" * 200_000 + b"Ns.", {})
                 .read_bytes(), "nests objects"),
    }
    for case, (name, raw, match) in cases.items():
        repo = tmp_path / case
        shutil.copytree(repo_factory(layers=1), repo)
        if raw is None:
            cfg = json.loads((repo / name).read_text())
            cfg["num_attention_heads"] = 0
            raw = json.dumps(cfg).encode()
        (repo / name).write_bytes(raw)
        _one_line_error(_zoo_inspect(repo, tmp_path), match)


def test_cli_inspect_warns_on_nan(repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    proc = _zoo_inspect(_repo_with_nan(repo_factory, tmp_path), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: tensor 'bert.embeddings.LayerNorm.weight' holds NaN or inf" in proc.stderr
