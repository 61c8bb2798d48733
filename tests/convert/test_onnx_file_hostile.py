"""The streaming ONNX writer against awkward arrays and outputs: any layout or byte order round-trips through
onnx.load and passes onnx.checker; names ONNX or the filesystem would refuse, directories, a full disk, Ctrl-C and
SIGTERM end in one ``ExportError`` line (or the signal's exit) with no file, temporary or final, left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from onnx import TensorProto, helper, numpy_helper

from zoo.convert import onnx_file
from zoo.errors import ExportError

ROOT = Path(__file__).resolve().parents[2]
LINUX = pytest.mark.skipif(sys.platform != "linux", reason="file names that are not UTF-8, signals, RLIMIT_FSIZE")


def parts(*arrays: np.ndarray) -> onnx_file.ModelParts:
    """A graph whose outputs are its initializers ``w0``, ``w1`` ... (Identity nodes), the arrays as they are."""
    nodes, outputs = [], []
    for i, arr in enumerate(arrays):
        nodes.append(helper.make_node("Identity", [f"w{i}"], [f"y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", helper.np_dtype_to_tensor_dtype(arr.dtype.newbyteorder("=")), list(arr.shape)))
    model = helper.make_model(helper.make_graph(nodes, "g", [], outputs), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx_file.ModelParts(model, [(f"w{i}", arr) for i, arr in enumerate(arrays)])


def loaded(path: Path) -> list[np.ndarray]:
    """The initializers of the ONNX file at ``path`` (external data and all), after onnx.checker passed it."""
    onnx.checker.check_model(str(path), full_check=True)
    return [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]


_rng = np.random.default_rng(7)
_f = _rng.standard_normal((40, 70)).astype(np.float32)
ARRAYS = {
    "big-endian float32": _f.astype(">f4"), "big-endian int16": (_f * 100).astype(">i2"), "big-endian float64 strided": _f.astype(">f8")[:, ::3],
    "transposed": _f.T, "transposed big-endian": _f.astype(">f4").T, "fortran order": np.asfortranarray(_f), "every other row": _f[::2],
    "3-d transposed": _f.reshape(4, 10, 70).transpose(2, 0, 1), "int8 transposed": (_f * 50).astype(np.int8).T,
    "uint8": (_f * 50).astype(np.uint8), "float16": _f.astype(np.float16), "bool": _f > 0, "int64 big-endian": np.arange(300, dtype=">i8"),
    "empty rows": np.zeros((0, 4), np.float32), "empty columns": np.zeros((4, 0), np.float32), "empty transposed": np.zeros((0, 4), np.float32).T,
    "scalar": np.asarray(np.float32(3.5)), "big-endian scalar": np.asarray(2.5, dtype=">f4"), "one element": np.ones(1, np.int64),
}


@pytest.mark.parametrize("external", [False, True], ids=["one file", "external data"])
@pytest.mark.parametrize("arr", ARRAYS.values(), ids=ARRAYS)
def test_any_array_layout_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arr: np.ndarray, external: bool) -> None:
    monkeypatch.setattr(onnx_file, "SLICE", 64)  # strided arrays go out in many slices
    small = np.arange(5, dtype=">i4")  # stays inline (under EXTERNAL_ABOVE) in both layouts
    model = parts(arr, small)
    done = onnx_file.write(model, tmp_path / "m.onnx", external_data=external)
    for got, want in zip(loaded(tmp_path / "m.onnx"), (arr, small), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, want)
    if not external:  # byte for byte what onnx serializes for the same tensors, made native first
        native = onnx_file.ModelParts(model.proto, [(n, a.astype(a.dtype.newbyteorder("="))) for n, a in model.inits])
        assert (tmp_path / "m.onnx").read_bytes() == native.with_tensors().SerializeToString()
    assert (done.data is not None) == external
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"][:1 + external]


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, (1 << 31) - 1, 1 << 31, (1 << 32) + 5, 1 << 35, (1 << 63) - 1])
def test_lengths_and_offsets_past_2gb_are_protobuf_varints(n: int) -> None:
    assert onnx_file._varint(n) == _VarintBytes(n)
    assert onnx_file._key(TensorProto.RAW_DATA_FIELD_NUMBER, n) == _VarintBytes(9 << 3 | 2) + _VarintBytes(n)


def test_a_graph_over_the_limit_is_never_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_file, "SINGLE_FILE_LIMIT", 10_000)
    big = np.ones((50, 70), np.float32)  # 14 kB
    with pytest.raises(ExportError, match="over protobuf's 2 GB limit"):
        onnx_file.write(parts(big), tmp_path / "m.onnx", external_data=False)
    assert list(tmp_path.iterdir()) == []
    done = onnx_file.write(parts(big), tmp_path / "m.onnx")  # the default: external data, as over 2 GB
    assert done.data is not None and np.array_equal(loaded(tmp_path / "m.onnx")[0], big)


def test_a_name_holding_dots_exports_as_one_file_and_is_refused_for_external_data(tmp_path: Path) -> None:
    """ONNX refuses any data file location holding '..': the temporary names must not hold the output's."""
    model = parts(_f)
    onnx_file.write(model, tmp_path / "m..v2.onnx")
    np.testing.assert_array_equal(loaded(tmp_path / "m..v2.onnx")[0], _f)
    with pytest.raises(ExportError, match=r"cannot keep the weights in 'n\.\.v2\.onnx\.data'") as err:
        onnx_file.write(model, tmp_path / "n..v2.onnx", external_data=True)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m..v2.onnx"]


@LINUX
def test_names_that_are_not_utf8(tmp_path: Path) -> None:
    model = parts(_f)
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.onnx"))
    onnx_file.write(model, odd)  # the graph file's own name is never inside the graph
    graph = onnx.load(str(odd))  # Python opens the name; onnx.checker's C++ takes only UTF-8 paths, so it checks the bytes
    onnx.checker.check_model(graph, full_check=True)
    np.testing.assert_array_equal(numpy_helper.to_array(graph.graph.initializer[0]), _f)
    with pytest.raises(ExportError, match="not UTF-8"):  # the data file's name is: as UTF-8, which it is not
        onnx_file.write(model, odd.with_name(odd.name + "2"), external_data=True)
    directory = Path(os.fsdecode(bytes(tmp_path) + b"/d\xe9"))
    directory.mkdir()
    with pytest.raises(ExportError, match="opens only UTF-8 paths"):
        onnx_file.write(model, directory / "m.onnx")
    assert sorted(os.listdir(tmp_path)) == sorted([odd.name, directory.name]) and os.listdir(directory) == []


def test_a_directory_in_the_way_leaves_nothing_behind(tmp_path: Path) -> None:
    model = parts(_f)
    (tmp_path / "out").mkdir()
    for external in (False, True):
        with pytest.raises(ExportError, match="out: it is a directory"):
            onnx_file.write(model, tmp_path / "out", external_data=external)
    (tmp_path / "m.onnx.data").mkdir()
    with pytest.raises(ExportError, match=r"m\.onnx\.data: it is a directory"):
        onnx_file.write(model, tmp_path / "m.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.data", "out"]  # no out.data beside the directory
    with pytest.raises(ExportError, match="cannot be the graph's own file"):
        onnx_file.write(model, tmp_path / "g.onnx", external_data=True, data_name="g.onnx")


def test_an_existing_output_is_replaced_whole(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"an older export")
    os.chmod(tmp_path / "m.onnx", 0o444)
    onnx_file.write(parts(_f), tmp_path / "m.onnx")
    np.testing.assert_array_equal(loaded(tmp_path / "m.onnx")[0], _f)


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="symlinks")
def test_a_link_planted_at_a_guessable_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    """As in a shared directory such as /tmp: the temporary files are created afresh, never opened where they lie."""
    victim = tmp_path / "victim"
    victim.write_text("mine")
    out = tmp_path / "shared" / "m.onnx"
    out.parent.mkdir()
    for name in (out.name, f"{out.name}.data", f"{out.name}.check"):  # the names an earlier version used
        (out.parent / f".{name}.{os.getpid()}.tmp").symlink_to(victim)
    onnx_file.write(parts(_f), out)
    onnx_file.write(parts(_f), out, external_data=True)
    assert victim.read_text() == "mine"


def test_an_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write = onnx_file._Sink.write
    calls = []

    def interrupted(self: onnx_file._Sink, data: bytes | np.ndarray) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        write(self, data)

    monkeypatch.setattr(onnx_file._Sink, "write", interrupted)
    for external in (False, True):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            onnx_file.write(parts(_f, _f.T), tmp_path / "m.onnx", external_data=external)
        assert list(tmp_path.iterdir()) == []


# The child sends itself the signal from inside the writer, after some bytes: no timing involved.
SIGNALLED = """
import os, signal, sys
import numpy as np
from pathlib import Path
from tests.convert.test_onnx_file_hostile import parts
from zoo.convert import onnx_file
write, calls = onnx_file._Sink.write, []
def signalled(self, data):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.{sig})
    write(self, data)
onnx_file._Sink.write = signalled
arr = np.ones((300, 300), np.float32)
try:
    onnx_file.write(parts(arr, arr.T), Path(sys.argv[1]) / "m.onnx", external_data={external})
except KeyboardInterrupt:
    sys.exit(130)
sys.exit("not interrupted")
"""


@LINUX
@pytest.mark.parametrize("external", [False, True], ids=["one file", "external data"])
@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 128 + signal.SIGTERM)])
def test_a_signal_mid_export_leaves_no_file(tmp_path: Path, sig: str, code: int, external: bool) -> None:
    child = subprocess.run([sys.executable, "-c", SIGNALLED.format(sig=sig, external=external), str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == code, child.stderr
    assert list(tmp_path.iterdir()) == []


FULL_DISK = """
import resource, sys
from pathlib import Path
import numpy as np
from tests.convert.test_onnx_file_hostile import parts
from zoo.convert import onnx_file
from zoo.errors import ExportError
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # a write past 100 kB fails: EFBIG, as ENOSPC would
arr = np.ones((300, 300), np.float32)
try:
    onnx_file.write(parts(arr, arr[::2]), Path(sys.argv[1]) / "m.onnx", external_data=sys.argv[2] == "1")
except ExportError as exc:
    sys.exit(f"error: {exc.one_line()}")
"""


@LINUX
@pytest.mark.parametrize("external", [False, True], ids=["one file", "external data"])
def test_a_full_disk_is_one_line_and_leaves_no_file(tmp_path: Path, external: bool) -> None:
    child = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path), str(int(external))], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 1 and child.stderr.strip().splitlines() == [f"error: cannot write {tmp_path / 'm.onnx'}: File too large"]
    assert list(tmp_path.iterdir()) == []


@LINUX
def test_cli_odd_outputs_are_one_line_errors_or_work(cli, repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    repo = str(repo_factory(layers=1))
    (tmp_path / "dir").mkdir()
    odd_outputs = (("-o", str(tmp_path / "dir")), ("-o", str(tmp_path / "dir"), "--external-data"),
                   ("-o", str(tmp_path / "a..b.onnx"), "--external-data"))
    for args in odd_outputs:
        result = cli("export", repo, *args)
        assert result.code == 1 and len(result.err.strip().splitlines()) == 1 and result.err.startswith("error: "), result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"] and list((tmp_path / "dir").iterdir()) == []
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.onnx")
    result = cli("export", repo, "-o", odd, "--json")
    assert result.code == 0, result.err
    assert result.json()["path"] == odd.encode("utf-8", "backslashreplace").decode()
    assert len(onnx.load(odd).graph.initializer) > 10
    result = cli("export", repo, "-o", odd)
    assert result.code == 0 and "caf\\udce9.onnx" in result.out, result.err
