"""Tokenization: vocab.txt and tokenizer.json give the same tokens, and offsets point into the original text."""

from __future__ import annotations

import shutil
import unicodedata

import pytest

from zoo.pipelines.tokenizer import load_tokenizer

TEXTS = [
    "Café déjà vu: the naïve señor's CRÈME brûlée, at 5:30 p.m.!",
    "Denver Broncos (AFC) vs. Carolina — Super Bowl 50; «quoted», ¿qué?",
    "  spaces\tand\nnewlines   between   words  ",
]


def bert_normalize(text: str) -> str:
    """Lower case and strip accents, the way BERT's uncased normalizer does (independent re-implementation)."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


@pytest.fixture(params=["vocab.txt", "tokenizer.json"])
def tokenizer(request, qa_repo, tmp_path):  # noqa: ANN001, ANN201
    if request.param == "vocab.txt":
        return load_tokenizer(qa_repo)
    repo = tmp_path / "with-json"
    shutil.copytree(qa_repo, repo)
    load_tokenizer(qa_repo).save(str(repo / "tokenizer.json"))
    (repo / "vocab.txt").unlink()  # proves tokenizer.json alone is used
    return load_tokenizer(repo)


@pytest.mark.parametrize("text", TEXTS)
def test_offsets_map_back_to_the_original_text(tokenizer, text):
    enc = tokenizer.encode(text)
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    last = 0
    for token, (start, end) in zip(enc.tokens[1:-1], enc.offsets[1:-1], strict=True):
        assert 0 <= start < end <= len(text) and start >= last
        last = start
        piece = bert_normalize(text[start:end])
        if token != "[UNK]":
            assert piece == token.removeprefix("##"), (token, text[start:end])


def test_pair_encoding_marks_segments(tokenizer):
    enc = tokenizer.encode("Who won?", "The Broncos won the game.")
    assert enc.tokens.count("[SEP]") == 2
    assert set(enc.type_ids[: enc.tokens.index("[SEP]") + 1]) == {0}
    assert set(enc.type_ids[enc.tokens.index("[SEP]") + 1:]) == {1}
    second = [o for o, s in zip(enc.offsets, enc.sequence_ids, strict=True) if s == 1]
    assert second[0][0] == 0 and second[-1] == (24, 25)  # offsets of the second text are relative to it; "." is the last token


def test_missing_tokenizer_files_are_a_clear_error(tmp_path):
    from zoo.errors import ZooError

    with pytest.raises(ZooError, match="neither tokenizer.json nor vocab.txt"):
        load_tokenizer(tmp_path)
