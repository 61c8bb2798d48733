"""BERT tokenization with the ``tokenizers`` library: the repo's ``tokenizer.json`` when there is one,
else a WordPiece tokenizer built from ``vocab.txt`` + ``tokenizer_config.json`` exactly as
``BertTokenizerFast`` builds it (BERT normalizer with lower-casing and accent stripping, BERT
pre-tokenizer, ``[CLS] A [SEP] B [SEP]`` template with token type ids). Offsets always point into the
caller's original text.

Tokenizer files are untrusted input: each is size-bounded, must be UTF-8, and a malformed one is a
one-line ``ZooError`` naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

MAX_CONFIG_BYTES = 16 << 20
MAX_VOCAB_BYTES = 64 << 20  # BERT's vocab.txt is 230 KB; multilingual ones a few MB
MAX_TOKENIZER_JSON_BYTES = 256 << 20


def _text(path: Path, limit: int) -> str:
    """The file's text, refused when it is larger than ``limit`` or not UTF-8."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise ZooError(f"{path} is {size} bytes, over the {limit} byte limit for this file")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ZooError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ZooError(f"{path} cannot be read: {exc.strerror or exc}") from None


def _config(repo: Path) -> dict[str, Any]:
    path = repo / "tokenizer_config.json"
    if not path.exists():
        return {}
    try:
        cfg = json.loads(_text(path, MAX_CONFIG_BYTES))
    except (ValueError, RecursionError):
        raise ZooError(f"{path} is not valid JSON") from None
    if not isinstance(cfg, dict):
        raise ZooError(f"{path} holds a JSON {type(cfg).__name__}, not an object")
    for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
        if cfg.get(key) is not None and not isinstance(cfg[key], bool):
            raise ZooError(f"{path}: {key} must be true, false or null, got {str(cfg[key])[:40]!r}")
    return cfg


def load_tokenizer(repo: Path, max_length: int | None = None) -> Any:
    """A ``tokenizers.Tokenizer`` for the repo (no padding or truncation set: pipelines set their own)."""
    from tokenizers import Tokenizer

    repo = Path(repo)
    if (repo / "tokenizer.json").exists():
        text = _text(repo / "tokenizer.json", MAX_TOKENIZER_JSON_BYTES)
        try:
            tok = Tokenizer.from_str(text)
        except BaseException as exc:  # tokenizers raises a bare Exception on bad files, and a Rust panic is a BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise ZooError(f"{repo / 'tokenizer.json'} cannot be loaded: {str(exc)[:200]}") from None
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
    lower = cfg.get("do_lower_case", True) is not False
    strip_accents = cfg.get("strip_accents")
    vocab: dict[str, int] = {}
    for i, line in enumerate(_text(repo / "vocab.txt", MAX_VOCAB_BYTES).splitlines()):
        vocab.setdefault(line.rstrip("\n"), i)
    for special in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"):
        if special not in vocab:
            raise ZooError(f"{repo / 'vocab.txt'} has no {special} token")
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=cfg.get("tokenize_chinese_chars") is not False,
                                                strip_accents=strip_accents, lowercase=lower)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok
