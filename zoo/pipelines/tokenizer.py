"""BERT tokenization with the ``tokenizers`` library: the repo's ``tokenizer.json`` when there is one,
else a WordPiece tokenizer built from ``vocab.txt`` + ``tokenizer_config.json`` exactly as
``BertTokenizerFast`` builds it (BERT normalizer with lower-casing and accent stripping, BERT
pre-tokenizer, ``[CLS] A [SEP] B [SEP]`` template with token type ids). Offsets always point into the
caller's original text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo.errors import ZooError


def _config(repo: Path) -> dict[str, Any]:
    path = repo / "tokenizer_config.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise ZooError(f"{path} is not valid JSON") from None


def load_tokenizer(repo: Path, max_length: int | None = None) -> Any:
    """A ``tokenizers.Tokenizer`` for the repo (no padding or truncation set: pipelines set their own)."""
    from tokenizers import Tokenizer

    repo = Path(repo)
    if (repo / "tokenizer.json").exists():
        try:
            tok = Tokenizer.from_file(str(repo / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001  (tokenizers raises a bare Exception on bad files)
            raise ZooError(f"{repo / 'tokenizer.json'} cannot be loaded: {exc}") from None
    elif (repo / "vocab.txt").exists():
        tok = _from_vocab(repo)
    else:
        raise ZooError(f"{repo} has neither tokenizer.json nor vocab.txt", "a BERT repo needs one of them")
    tok.no_padding()
    tok.no_truncation()
    return tok


def _from_vocab(repo: Path) -> Any:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    cfg = _config(repo)
    lower = bool(cfg.get("do_lower_case", True))
    strip_accents = cfg.get("strip_accents")
    vocab = {}
    for i, line in enumerate((repo / "vocab.txt").read_text(encoding="utf-8").splitlines()):
        vocab.setdefault(line.rstrip("\n"), i)
    for special in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"):
        if special not in vocab:
            raise ZooError(f"{repo / 'vocab.txt'} has no {special} token")
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=cfg.get("tokenize_chinese_chars", True),
                                                strip_accents=strip_accents, lowercase=lower)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok
