"""``zoo demo``: the whole product offline, on a synthetic oBERT-shaped model, one printed step at a time.

Nothing touches the user's cache: the demo runs in a temporary home (or ``--home DIR``), passed down in its
``Settings`` (the process environment is left alone), serves a
synthetic repo named like ``obert-3l-80-quant`` from a local Hub-compatible mirror on 127.0.0.1, then
downloads, verifies, converts, validates and answers a question exactly as with the real Hub.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoo.config import Settings

MODEL = "obert-3l-80-quant"
QUESTION = "How tall is the Eiffel Tower?"
CONTEXT = ("The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was built in 1889 as the entrance "
           "to the World's Fair. The tower is 330 meters tall, about the same height as an 81-storey building.")


def run(say: Callable[[str], None], home: Path | None = None, hidden: int = 768, threads: int | None = None) -> dict:
    """Run every step, reporting through ``say``; returns what a test or ``--json`` needs.

    Everything is written under a temporary directory removed at the end, unless ``home`` is given
    (then the installed demo model stays there; the mirror is always removed)."""
    import shutil

    from zoo.config import Settings

    work = Path(tempfile.mkdtemp(prefix="zoo-demo-"))
    settings = Settings.from_env(home=home or work / "home", threads=threads).with_(offline=False)
    try:
        return _steps(say, work, hidden, settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _steps(say: Callable[[str], None], work: Path, hidden: int, settings: Settings) -> dict:
    from zoo.catalog import resolve
    from zoo.synth import SynthSpec, write_repo

    card = resolve(MODEL)
    steps: dict[str, float] = {}

    def step(label: str) -> Callable[[], None]:
        t = time.perf_counter()
        return lambda: steps.__setitem__(label, round(time.perf_counter() - t, 3))

    done = step("synthesize")
    spec = SynthSpec.for_card(card, hidden=hidden, heads=max(1, hidden // 64), intermediate=4 * hidden)
    write_repo(work / "mirror" / card.repo, spec)
    done()
    say(f"1. synthesized {card.name}: {spec.layers} layers x {spec.hidden} wide, {spec.sparsity:.0f}% {spec.pattern}, int8 QAT "
        f"(random weights; the real checkpoint is {card.repo} on the Hub)")

    from zoo.fetch import verify
    from zoo.fetch.mirror import serve
    from zoo.fetch.sources import HubSource
    from zoo.prepare import download, load

    server = serve(work / "mirror").start()
    try:
        say(f"2. serving it from a local Hub-compatible mirror at {server.url}")
        done = step("download")
        result = download(card.name, settings, sources=[HubSource(endpoint=server.url)])
        done()
        say(f"3. downloaded {len(result.files)} files, {result.fetched / 1e6:.1f} MB into {settings.home}; each verified "
            f"by sha256 while streaming ({', '.join(sorted({f.verified_by for f in result.files}))})")
    finally:
        server.shutdown()
        server.server_close()
    done = step("verify")
    checked = verify([card.name], home=settings.home)
    done()
    say(f"4. re-verified from disk: {'ok' if all(v.ok for v in checked) else 'FAILED'} (mirror stopped: from here on, no network)")

    verdicts = []
    done = step("load")
    qa = load(card.name, settings.with_(offline=True), on_verdict=verdicts.append)
    done()
    verdict = verdicts[0]
    say(f"5. converted, compiled ({verdict.engine}) and validated against the reference and onnxruntime:")
    say(f"   {verdict.line()}")
    if verdict.warning:
        say(f"   note: {verdict.warning}")
    done = step("answer")
    answer = qa(question=QUESTION, context=CONTEXT)
    done()
    say(f"6. qa(question={QUESTION!r}) -> {answer['answer']!r} (score {answer['score']:.3f}, chars {answer['start']}-{answer['end']})")
    say("   the weights are random, so the span is arbitrary; with the Hub's weights: zoo download obert-3l-80-quant")
    return {"model": card.name, "steps_s": steps, "verdict": verdict.to_dict(), "answer": answer}
