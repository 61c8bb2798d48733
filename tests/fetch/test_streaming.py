"""What keeps `zoo download` as fast as its transfer (bench/download.py measures it): one GET per file, every byte
hashed as it arrives, and the verified partial file becoming the blob by a rename: nothing is read back or copied."""

from __future__ import annotations

from pathlib import Path

from tests.fetch.conftest import MODEL
from zoo.fetch import download
from zoo.fetch.hashing import StreamHash
from zoo.fetch.store import Store


def test_a_fresh_download_gets_each_file_once_and_never_reads_or_copies_it(mirror, isolated_home, monkeypatch):
    feed_file = StreamHash.feed_file

    def no_read_back(h: StreamHash, path: Path, *args: object, **kwargs: object) -> None:
        assert not Path(path).is_relative_to(isolated_home), f"{path} was read back to hash it"
        feed_file(h, path, *args, **kwargs)  # the in-process mirror hashes what it serves

    monkeypatch.setattr(StreamHash, "feed_file", no_read_back)
    renamed: dict[str, tuple[int, int]] = {}
    adopt = Store.adopt

    def adopt_and_compare(store: Store, tmp: Path, sha256: str) -> Path:
        before = tmp.stat().st_ino
        final = adopt(store, tmp, sha256)
        renamed[sha256] = (before, final.stat().st_ino)
        return final

    monkeypatch.setattr(Store, "adopt", adopt_and_compare)
    result = download(MODEL, home=isolated_home)
    assert {f.action for f in result.files} == {"download"}
    assert sorted(path for path, _ in mirror.faults.gets) == sorted(f.path for f in result.files)  # no HEAD+GET, no refetch
    assert len(renamed) == len({f.sha256 for f in result.files})
    assert all(before == after for before, after in renamed.values())  # the blob is the partial file itself
