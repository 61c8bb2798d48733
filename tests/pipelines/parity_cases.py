"""Inputs on which zoo's pipelines must answer exactly as transformers' pipelines, and transformers' answers.

The models are zoo.synth checkpoints (torch-format ``pytorch_model.bin`` + ``config.json`` + a BERT WordPiece
``vocab.txt``) that transformers' ``BertFor*`` classes load as they are. Transformers 5 dropped the
question-answering pipeline, so the reference is transformers 4.x (4.57 when recorded), which needs
``huggingface_hub<1``; that cannot share an environment with this project's test extra, so its answers are
recorded in ``data/parity_transformers.json`` and checked by every test run, and compared live where a
transformers with both pipelines is importable. Re-record (after changing a case or zoo.synth) with::

    python -m venv /tmp/hf4 && /tmp/hf4/bin/pip install -e '.[parity,test]'
    /tmp/hf4/bin/python tests/pipelines/parity_cases.py         # rewrites data/parity_transformers.json
    /tmp/hf4/bin/python -m pytest tests/pipelines/test_parity.py tests/convert/test_export_optimum.py   # live too
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from zoo.synth import SynthSpec, write_repo

RECORDED = Path(__file__).parent / "data" / "parity_transformers.json"

SMALL = dict(hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128)
SPECS = {
    "qa": SynthSpec(layers=2, sparsity=90, pattern="unstructured", seed=11, **SMALL),  # type: ignore[arg-type]
    "mnli": SynthSpec(layers=2, sparsity=80, pattern="block4", seed=12, task="text-classification", **SMALL),  # type: ignore[arg-type]
    "one-label": SynthSpec(layers=1, seed=13, task="text-classification", labels=("acceptable",), **SMALL),  # type: ignore[arg-type]
    "multi-label": SynthSpec(layers=1, seed=14, task="text-classification", labels=("sports", "music", "film", "science"),
                             **SMALL),  # type: ignore[arg-type]
}
CONFIG_EXTRA = {"multi-label": {"problem_type": "multi_label_classification"}}

SUPER_BOWL = ("Super Bowl 50 was an American football game to determine the champion of the National Football League (NFL) "
              "for the 2015 season. The American Football Conference (AFC) champion Denver Broncos defeated the National "
              "Football Conference (NFC) champion Carolina Panthers 24–10 to earn their third Super Bowl title. The game "
              "was played on February 7, 2016, at Levi's Stadium in the San Francisco Bay Area at Santa Clara, California.")
ACCENTS = ("Bizet's opéra « Carmen » premièred at the Opéra-Comique in Paris; Zoë, Renée and Jürgen — café regulars — "
           "said it was über-dramatic, naïve, and très long… The Société's review (1875): “a fiasco!” Today it's "
           "performed everywhere, from São Paulo to Kraków, and its Habanera is hummed in cafés & bistros.")
LONG = " ".join(f"In {1900 + i} the city council of Ålesund met {i % 7 + 2} times, voted on item #{i * 13 % 97}, and "
                f"adjourned at {i % 12 + 1}:{i * 7 % 60:02d} p.m.; minutes were kept by clerk Núñez-{i % 5}." for i in range(40))

QA_CASES: list[dict[str, Any]] = [
    {"question": "Which NFL team won Super Bowl 50?", "context": SUPER_BOWL},
    {"question": "Who did the Broncos beat?", "context": SUPER_BOWL, "top_k": 5},
    {"question": "Who did the Broncos beat?", "context": SUPER_BOWL, "top_k": 3, "align_to_words": False},
    {"question": "Where was it played?", "context": SUPER_BOWL, "handle_impossible_answer": True, "top_k": 2},
    {"question": "Where did Carmen première?", "context": ACCENTS, "top_k": 4},
    {"question": "Who called it über-dramatic?", "context": ACCENTS, "max_seq_len": 48, "doc_stride": 12, "top_k": 3},
    {"question": "When did the council adjourn?", "context": LONG, "top_k": 3},
    {"question": "Who kept the minutes?", "context": LONG, "max_seq_len": 64, "doc_stride": 20, "max_answer_len": 6, "top_k": 5},
    {"question": "How many times did they meet in 1917?", "context": LONG, "max_seq_len": 96, "doc_stride": 30,
     "handle_impossible_answer": True},
    {"question": "What item was voted on?", "context": LONG, "align_to_words": False, "max_answer_len": 3, "top_k": 2},
    {"question": "Was it raining?", "context": "It rained.", "handle_impossible_answer": True, "top_k": 10},  # "" among them
]

PREMISE = "The new rights are nice enough; everyone seems to like them — even Zoë, who's hard to please."
CLASSIFY_CASES: list[dict[str, Any]] = [
    {"model": "mnli", "inputs": {"text": PREMISE, "text_pair": "Zoë is pleased with the rights."}, "top_k": 1},
    {"model": "mnli", "inputs": {"text": PREMISE, "text_pair": "Nobody likes the new rights!"}, "top_k": None},
    {"model": "mnli", "inputs": {"text": "Café au lait, s'il vous plaît."}, "top_k": 2},
    {"model": "mnli", "inputs": {"text": PREMISE, "text_pair": "It is hard."}, "top_k": None, "function_to_apply": "sigmoid"},
    {"model": "mnli", "inputs": {"text": "Naïve, but über-cool."}, "top_k": None, "function_to_apply": "none"},
    {"model": "one-label", "inputs": {"text": "The cat sat on the mat, didn't it?"}, "top_k": 1},
    {"model": "one-label", "inputs": {"text": "Colorless green ideas sleep furiously."}, "top_k": None, "function_to_apply": "softmax"},
    {"model": "multi-label", "inputs": {"text": "The Broncos' quarterback sang the anthem at the film festival."}, "top_k": None},
    {"model": "multi-label", "inputs": {"text": LONG}, "top_k": 3},  # longer than the model: truncated to 128 tokens
]


def write_repos(root: Path) -> dict[str, Path]:
    """Every parity model written under ``root`` (deterministic: same specs, same bytes)."""
    repos = {}
    for name, spec in SPECS.items():
        repo = write_repo(root / name, spec)
        if name in CONFIG_EXTRA:
            cfg = json.loads((repo / "config.json").read_text())
            (repo / "config.json").write_text(json.dumps({**cfg, **CONFIG_EXTRA[name]}, indent=2) + "\n")
        repos[name] = repo
    return repos


def fingerprint(repos: dict[str, Path]) -> dict[str, str]:
    """sha256 of each model's checkpoint and config: the recorded answers hold only for these bytes."""
    return {name: hashlib.sha256(b"".join((repo / f).read_bytes() for f in ("config.json", "vocab.txt", "pytorch_model.bin"))).hexdigest()
            for name, repo in repos.items()}


def transformers_answers(repos: dict[str, Path]) -> dict[str, Any]:
    """Every case answered by transformers' own pipelines (needs torch and transformers 4.x)."""
    import transformers
    from transformers import (
        AutoTokenizer,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        QuestionAnsweringPipeline,
        TextClassificationPipeline,
    )

    qa_repo = repos["qa"]
    qa = QuestionAnsweringPipeline(model=BertForQuestionAnswering.from_pretrained(qa_repo), tokenizer=AutoTokenizer.from_pretrained(qa_repo))
    qa_out = [qa(**case) for case in QA_CASES]
    classifiers = {name: TextClassificationPipeline(model=BertForSequenceClassification.from_pretrained(repos[name]),
                                                    tokenizer=AutoTokenizer.from_pretrained(repos[name]), truncation=True)
                   for name in ("mnli", "one-label", "multi-label")}
    clf_out = [classifiers[case["model"]](case["inputs"], **{k: v for k, v in case.items() if k not in ("model", "inputs")})
               for case in CLASSIFY_CASES]
    return {"transformers": transformers.__version__, "models": fingerprint(repos), "question_answering": qa_out,
            "text_classification": clf_out}


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        answers = transformers_answers(write_repos(Path(tmp)))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{out}: {len(QA_CASES)} question-answering and {len(CLASSIFY_CASES)} classification answers from transformers "
          f"{answers['transformers']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(RECORDED))
