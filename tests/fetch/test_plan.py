"""The pure decisions of the fetch stage: what to do with a file, and what it must hash to."""

from __future__ import annotations

import pytest

from zoo.catalog import FileSpec
from zoo.errors import IntegrityError
from zoo.fetch.hashing import Expected, StreamHash, check
from zoo.fetch.install import decide, expected_for, vouch
from zoo.fetch.sources import Remote
from zoo.fetch.transfer import Limits, etag_claim

SHA_A, SHA_B = "a" * 64, "b" * 64


@pytest.mark.parametrize(("expected", "in_store", "in_hf", "partial", "can_fetch", "action"), [
    (Expected(sha256=SHA_A), True, False, 0, True, "cached"),
    (Expected(sha256=SHA_A), True, True, 10, False, "cached"),
    (Expected(), True, False, 0, True, "download"),  # no hash known: a blob cannot be identified
    (Expected(sha256=SHA_A), False, True, 0, True, "hf-cache"),
    (Expected(sha256=SHA_A), False, False, 10, True, "resume"),
    (Expected(sha256=SHA_A), False, False, 0, True, "download"),
    (Expected(sha256=SHA_A), False, False, 10, False, "unavailable"),
])
def test_decide(expected, in_store, in_hf, partial, can_fetch, action):
    assert decide(expected, in_store, in_hf, partial, can_fetch) == action


def test_expected_prefers_the_catalog_and_refuses_disagreement():
    spec = FileSpec("r", "main", "w.bin", sha256=SHA_A, size=10)
    assert expected_for(spec, None, [Remote("w.bin", 10, SHA_A)], "m/w.bin").authority == "catalog"
    with pytest.raises(IntegrityError, match="catalog: a+ .*source: b+"):
        expected_for(spec, None, [Remote("w.bin", 10, SHA_B)], "m/w.bin")
    with pytest.raises(IntegrityError, match="sources disagree"):
        expected_for(FileSpec("r", "main", "w.bin"), {"sha256": SHA_A, "size": 10}, [Remote("w.bin", 11, None)], "m/w.bin")
    pinned = expected_for(FileSpec("r", "main", "w.bin"), {"sha256": SHA_A, "size": 10}, [], "m/w.bin")
    assert pinned.trusted and pinned.verified_by == "pinned"
    first = expected_for(FileSpec("r", "main", "w.bin"), None, [Remote("w.bin", 10, SHA_B)], "m/w.bin")
    assert not first.trusted and first.verified_by == "source sha256, pinned on first use"


def test_check_names_file_expected_and_actual():
    h = StreamHash(git_size=5)
    h.update(b"hello")
    check("m/f", Expected(size=5, git_oid="b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"), h)  # `git hash-object` of "hello"
    with pytest.raises(IntegrityError, match=f"m/f: sha256 mismatch: expected {SHA_A} .*got {h.sha256}"):
        check("m/f", Expected(size=5, sha256=SHA_A, authority="catalog"), h)
    with pytest.raises(IntegrityError, match="size mismatch: expected 6 bytes, got 5"):
        check("m/f", Expected(size=6), h)
    with pytest.raises(IntegrityError, match="git blob id mismatch"):
        check("m/f", Expected(size=5, git_oid="0" * 40), h)


def test_the_strongest_listing_names_the_authority_and_all_must_agree():
    spec = FileSpec("r", "main", "w.bin")
    mirror, hub = Remote("w.bin", 10, SHA_A, authority="hashes-file"), Remote("w.bin", 10, SHA_A)
    assert expected_for(spec, None, [mirror, hub], "m/w.bin").authority == "source"
    assert expected_for(spec, None, [mirror], "m/w.bin").verified_by == "source sha256 (a mirror's hashes file), pinned on first use"
    with pytest.raises(IntegrityError, match="hashes-file: a+ .*source: b+"):
        expected_for(spec, None, [mirror, Remote("w.bin", 10, SHA_B)], "m/w.bin")
    assert not expected_for(spec, None, [Remote("w.bin", 10)], "m/w.bin").vouched  # a size is not a hash


def test_a_response_header_vouches_only_where_nothing_stronger_disagrees():
    bare = Expected(size=10)
    assert vouch(bare, SHA_A, None, "header", "m/f") == Expected(size=10, sha256=SHA_A, authority="header")
    assert vouch(Expected(size=10, sha256=SHA_A, authority="source"), SHA_A, None, "header", "m/f").authority == "source"
    with pytest.raises(IntegrityError, match="the header says b+, but source sha256"):
        vouch(Expected(size=10, sha256=SHA_A, authority="source"), SHA_B, None, "header", "m/f")
    assert etag_claim('W/"' + "C" * 64 + '"') == ("c" * 64, None)
    assert etag_claim('"' + "d" * 40 + '"') == (None, "d" * 40)
    assert etag_claim('"5f1a-3b2"') == (None, None)  # an ordinary web server's ETag says nothing about content


def test_check_computes_nothing_it_cannot_and_a_missing_git_oid_is_a_mismatch():
    h = StreamHash()  # size unknown up front: no git id was computed while streaming
    h.update(b"hello")
    with pytest.raises(IntegrityError, match="git blob id mismatch"):
        check("m/f", Expected(git_oid="b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"), h)
    check("m/f", Expected(git_oid="b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"), h, git_oid="b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0")


@pytest.mark.parametrize(("header", "wait"), [("100000", 60.0), ("3", 3.0), ("", None), ("soon", None),
                                              ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_is_capped(header, wait):
    assert Limits(max_retry_after=60).retry_after(header) == wait
