"""Batch scoring on Ray Data: ``zoo.batch``'s shards through ``map_batches`` on a pool of actors, one pipeline each.

The driver plans shards (small descriptors, see ``zoo.batch``) and writes what comes back; each actor loads the
model once through ``zoo.prepare`` (downloading and verifying on its own node when needed), with as many engine
threads as CPUs it was given, and reads its shards itself, so a worker node needs the input at the same path
(a shared filesystem) but nothing heavy crosses the object store except the answers. Results come back in input
order (``preserve_order``), so the output is the one a single process writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from zoo.batch import Scored, Scorer, Scoring, Shard
from zoo.config import Settings
from zoo.errors import ZooError
from zoo.integrations import assigned_threads, connect


class ShardScorer:
    """A Ray Data actor: one ``Scorer``; a batch of shard descriptors in, one row per shard out."""

    def __init__(self, scoring: Scoring, settings: Settings) -> None:
        self.scorer = Scorer(scoring.model, settings.with_(threads=assigned_threads(settings.threads or 1)), engine=scoring.engine,
                             top_k=scoring.top_k)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        results = [self.scorer.score(Shard.from_json(str(text))) for text in batch["shard"]]
        return {"first": [r.first for r in results], "lines": ["\n".join(r.lines) for r in results],
                "count": [len(r.lines) for r in results], "error": [r.error for r in results], "worker": [r.worker for r in results]}


def scorer(address: str | None, scoring: Scoring, settings: Settings, actors: int | None = None,
           say: Callable[[str], None] = lambda text: None) -> Any:
    """A ``zoo.batch.run`` ``score`` function that maps shards through actors on the Ray cluster at ``address``;
    ``actors`` defaults to the cluster's CPUs divided by the threads each one uses."""

    def score(parts: list[Shard]) -> Iterator[Scored]:
        from zoo.prepare import locate

        locate(scoring.model, settings, on_status=say)  # resolved and fetched once, here: a wrong name is one line before Ray
        ray = connect(address)
        from ray import data

        threads = settings.threads or 1
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < threads:
            raise ZooError(f"the Ray cluster has {cpus} CPUs, fewer than the {threads} threads one actor needs", "lower --threads")
        size = max(1, min(actors or cpus // threads, len(parts)))
        say(f"scoring on Ray Data: {size} actor{'s' if size != 1 else ''}, {threads} CPU{'s' if threads != 1 else ''} each")
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # our own progress and summary say what its INFO lines say
        context = data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.wait_for_min_actors_s = 600  # every actor loaded before the first shard, so the shards spread over all
        dataset = data.from_items([{"shard": p.to_json()} for p in parts], override_num_blocks=len(parts))
        scored = dataset.map_batches(ShardScorer, fn_constructor_args=(scoring, settings), batch_size=1,
                                     compute=data.ActorPoolStrategy(size=size), num_cpus=threads)
        try:
            for row in scored.iter_rows():
                lines = row["lines"].split("\n") if row["count"] else []
                yield Scored(int(row["first"]), lines, row["error"], row["worker"])
        except ray.exceptions.RayError as exc:
            cause = str(exc).strip().splitlines()
            raise ZooError(f"batch scoring failed on Ray: {(cause[-1] if cause else type(exc).__name__)[:300]}",
                           f"the answers so far are kept in {scoring.output}; run the same command again to go on") from None

    return score
