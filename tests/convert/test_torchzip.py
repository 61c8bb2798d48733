"""The torch zip reader: round trips, refusal of unsafe pickles, and clear errors on broken files."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from zoo.convert.torchsave import _global, _int, _tuple, _unicode, save_state_dict
from zoo.convert.torchzip import CheckpointReader, read_state_dict
from zoo.errors import CheckpointError, UnsafeCheckpointError

DTYPES = [np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.int32, np.int64, np.bool_]


def sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    out = {f"t_{np.dtype(dt).name}": (rng.standard_normal((3, 5)) * 50).astype(dt) for dt in DTYPES}
    out["scalar"] = np.array(3.5, dtype=np.float32)
    out["empty"] = np.zeros((0, 4), dtype=np.float32)
    return out


def test_round_trip_every_dtype(tmp_path: Path) -> None:
    tensors = sample()
    save_state_dict(tensors, tmp_path / "m.bin")
    loaded = read_state_dict(tmp_path / "m.bin")
    assert list(loaded) == list(tensors)
    for name, arr in tensors.items():
        assert loaded[name].dtype == arr.dtype and loaded[name].shape == arr.shape
        assert np.array_equal(loaded[name], arr), name


def test_storages_are_memory_mapped_and_read_only(tmp_path: Path) -> None:
    big = np.arange(1 << 20, dtype=np.float32).reshape(1024, 1024)
    save_state_dict({"w": big}, tmp_path / "m.bin")
    w = read_state_dict(tmp_path / "m.bin")["w"]
    assert not w.flags.owndata and not w.flags.writeable
    base = w
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert not isinstance(base, np.ndarray)  # the buffer is the file mapping, not a numpy copy
    assert np.array_equal(w, big)


def _archive(path: Path, pkl: bytes, storages: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr("archive/data.pkl", pkl)
        for key, data in storages.items():
            zf.writestr(f"archive/data/{key}", data)
    return path


def _tensor(key: str, numel: int, offset: int, size: tuple, stride: tuple, storage: str = "FloatStorage") -> bytes:
    pid = _tuple([_unicode("storage"), _global("torch", storage), _unicode(key), _unicode("cpu"), _int(numel)])
    args = _tuple([pid + b"Q", _int(offset), _tuple([_int(s) for s in size]), _tuple([_int(s) for s in stride]), b"\x89",
                   _global("collections", "OrderedDict") + b")R"])
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _state_pickle(entries: dict[str, bytes]) -> bytes:
    body = b"".join(_unicode(k) + v for k, v in entries.items())
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + body + b"u."


def test_strides_offsets_and_shared_storage(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.float32)
    pkl = _state_pickle({
        "full": _tensor("0", 12, 0, (3, 4), (4, 1)),
        "transposed": _tensor("0", 12, 0, (4, 3), (1, 4)),
        "tail": _tensor("0", 12, 6, (2, 3), (3, 1)),
    })
    path = _archive(tmp_path / "v.bin", pkl, {"0": data.tobytes()})
    with CheckpointReader(path) as reader:
        sd = reader.state_dict()
        assert len(reader._storages) == 1  # one storage, read once, shared by three views
    assert np.array_equal(sd["full"], data.reshape(3, 4))
    assert np.array_equal(sd["transposed"], data.reshape(3, 4).T)
    assert np.array_equal(sd["tail"], data[6:].reshape(2, 3))
    assert np.shares_memory(sd["full"], sd["transposed"])


def test_refuses_os_system_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    path = _archive(tmp_path / "evil.bin", pickle.dumps({"w": Evil()}, protocol=2), {})
    with pytest.raises(UnsafeCheckpointError) as info:
        read_state_dict(path)
    assert "system" in str(info.value) and ("posix" in str(info.value) or "os" in str(info.value))
    assert "nothing was executed" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"), ("torch", "load"), ("numpy", "load")])
def test_refuses_any_other_global(tmp_path: Path, module: str, name: str) -> None:
    pkl = b"\x80\x02" + _global(module, name) + b")R."
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}"):
        read_state_dict(_archive(tmp_path / "x.bin", pkl, {}))


def test_truncated_archive(tmp_path: Path) -> None:
    save_state_dict({"w": np.ones((256, 256), dtype=np.float32)}, tmp_path / "m.bin")
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "m.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(tmp_path / "m.bin")


def test_storage_shorter_than_tensor(tmp_path: Path) -> None:
    pkl = _state_pickle({"w": _tensor("0", 100, 0, (10, 10), (10, 1))})
    with pytest.raises(CheckpointError, match="holds 10 elements"):
        read_state_dict(_archive(tmp_path / "s.bin", pkl, {"0": np.zeros(10, np.float32).tobytes()}))
    pkl = _state_pickle({"w": _tensor("0", 10, 5, (2, 5), (5, 1))})
    with pytest.raises(CheckpointError, match="reaches past its storage"):
        read_state_dict(_archive(tmp_path / "o.bin", pkl, {"0": np.zeros(10, np.float32).tobytes()}))


def test_zip_bomb_refused(tmp_path: Path) -> None:
    pkl = _state_pickle({"w": _tensor("0", 4, 0, (4,), (1,))})
    path = tmp_path / "bomb.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr(zipfile.ZipInfo("archive/data/0"), b"\0" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="zip bomb"):
        read_state_dict(path)


def test_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "legacy.bin").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a torch zip checkpoint"):
        read_state_dict(tmp_path / "legacy.bin")


def test_corrupt_pickle(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="corrupt"):
        read_state_dict(_archive(tmp_path / "c.bin", b"\x80\x02garbage", {}))


@pytest.fixture
def torch():  # noqa: ANN201  (a module-level importorskip would skip every test of this file)
    return pytest.importorskip("torch", reason="torch is optional: the cross-check runs only where it is installed")


def test_torch_reads_our_files_identically(tmp_path: Path, torch) -> None:  # noqa: ANN001
    tensors = sample()
    save_state_dict(tensors, tmp_path / "m.bin")
    loaded = torch.load(tmp_path / "m.bin", weights_only=True)
    for name, arr in tensors.items():
        assert np.array_equal(loaded[name].numpy(), arr) and loaded[name].numpy().dtype == arr.dtype, name


def test_we_read_torch_files_identically(tmp_path: Path, torch) -> None:  # noqa: ANN001
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {"base": base, "view_t": base.t(), "slice": base[1:, 2:], "bf16": torch.linspace(-3, 3, 7, dtype=torch.bfloat16),
          "f16": torch.randn(3, dtype=torch.float16), "i8": torch.tensor([-128, 127], dtype=torch.int8),
          "u8": torch.tensor([0, 255], dtype=torch.uint8), "i32": torch.tensor([1, -2], dtype=torch.int32),
          "i64": torch.tensor(5), "bool": torch.tensor([True, False])}
    buf = io.BytesIO()
    torch.save(sd, buf)
    (tmp_path / "t.bin").write_bytes(buf.getvalue())
    ours = read_state_dict(tmp_path / "t.bin")
    for name, t in sd.items():
        expected = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert np.array_equal(ours[name], expected), name
