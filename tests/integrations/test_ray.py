"""Ray Serve replicas and Ray Data actors on a real two-node Ray cluster (127.0.0.1, one CPU per node).

``zoo serve --ray --replicas 2`` must answer as ``zoo serve`` does (same routes, bodies and errors, answers equal
to the pipeline's), with more than one replica answering; ``zoo run --input ... --ray ADDRESS`` must write what
the single-process run writes, in order, scored by more than one actor.
"""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import zoo
from tests.integrations.conftest import RayCluster
from tests.integrations.test_batch import assert_same_answers, qa_inputs, read_jsonl, write_jsonl
from tests.serve.conftest import start_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Serve's pydantic models warn on import


@pytest.fixture(scope="module")
def qa_pipe(qa_repo: Path):  # noqa: ANN201
    return zoo.load(str(qa_repo), threads=1)


def test_serve_on_ray_answers_as_zoo_serve_from_more_than_one_replica(ray_cluster: RayCluster, qa_repo: Path, qa_pipe,  # noqa: ANN001
                                                                     tmp_path: Path) -> None:
    served = start_server("--ray", "--replicas", "2", "--threads", "1", str(qa_repo), env=ray_cluster.env(ZOO_HOME=str(tmp_path)))
    try:
        assert f"deploying {qa_repo.name} on Ray Serve: 2 replicas, 1 CPU each" in served.stderr()
        inputs = qa_inputs(24)

        def ask(rec: dict) -> tuple[str, dict]:
            r = served.post(f"/models/{qa_repo.name}", json={"inputs": {"question": rec["question"], "context": rec["context"]}})
            assert r.status_code == 200, r.text
            return r.headers["x-zoo-replica"], r.json()

        replicas: set[str] = set()
        for _ in range(5):  # concurrent waves until the proxy has used both replicas (the first wave nearly always does)
            with ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(ask, inputs))
            replicas |= {replica for replica, _ in answers}
            for rec, (_, got) in zip(inputs, answers, strict=True):
                alone = qa_pipe(question=rec["question"], context=rec["context"])
                assert (got["answer"], got["start"], got["end"]) == (alone["answer"], alone["start"], alone["end"])
                assert abs(got["score"] - alone["score"]) < 1e-6
            if len(replicas) > 1:
                break
        assert len(replicas) == 2, f"one replica answered everything: {replicas}"

        v2 = served.post(f"/v2/models/{qa_repo.name}/infer", json={"inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [1], "data": [inputs[0]["question"]]},
            {"name": "context", "datatype": "BYTES", "shape": [1], "data": [inputs[0]["context"]]}]})
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o["data"][0] for o in v2.json()["outputs"]}
        assert outputs["answer"] == qa_pipe(question=inputs[0]["question"], context=inputs[0]["context"])["answer"]
        missing = served.post("/models/nope", json={"inputs": "x"})
        assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["error"]
        bad = served.post(f"/models/{qa_repo.name}", data=b"{not json")
        assert bad.status_code == 400 and bad.json() == {"error": "request body is not valid JSON"}
        assert served.get("/v2/health/ready").json() == {"ready": True}
    finally:
        code = served.stop(signal.SIGTERM)
    assert code == 0, served.stderr()[-3000:]
    assert "zoo serve: stopped" in served.stderr()
    with pytest.raises(requests.ConnectionError):  # the application, and Serve with it (it held nothing else), is gone
        requests.get(served.url + "/v2/health/ready", timeout=5)


def test_run_on_ray_data_writes_what_one_process_writes_from_several_actors(ray_cluster: RayCluster, cli, qa_repo: Path,
                                                                             tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "questions.jsonl", qa_inputs(40), blank_after=(9,))
    alone, on_ray = tmp_path / "alone.jsonl", tmp_path / "ray.jsonl"
    single = cli("run", str(qa_repo), "--input", str(source), "--output", str(alone), "--batch-size", "4", "--threads", "1")
    assert single.code == 0, single.err
    ray = cli("run", str(qa_repo), "--input", str(source), "--output", str(on_ray), "--batch-size", "4", "--threads", "1",
              "--ray", ray_cluster.address, env=ray_cluster.env())
    assert ray.code == 0, ray.err[-3000:]
    assert "scoring on Ray Data: 2 actors, 1 CPU each" in ray.err
    assert "scored 40 of 40 inputs" in ray.err and "on 2 workers" in ray.err, ray.err[-2000:]
    got = read_jsonl(on_ray)
    assert [r["line"] for r in got] == [*range(1, 11), *range(12, 42)]
    assert_same_answers(got, read_jsonl(alone))
    assert json.loads(on_ray.read_text().splitlines()[0])["id"] == 0


def test_ray_serve_application_builder_checks_its_arguments(qa_repo: Path) -> None:
    from ray.serve import Application

    from zoo.errors import InputError
    from zoo.integrations.ray_serve import Scale, app

    built = app({"model": str(qa_repo), "replicas": "3", "threads": "2", "max_batch": "8"})
    assert isinstance(built, Application)
    assert Scale.parse(None, "1:4") == Scale(1, (1, 4)) and Scale.parse(2, None) == Scale(2)
    for args, message in [({}, "model=NAME"), ({"model": "m", "replicas": "two"}, "not a number"), ({"model": "m", "colour": "red"},
                          "unknown argument 'colour'"), ({"model": "m", "autoscale": "4:1"}, "is not MIN:MAX"),
                          ({"model": "m", "engine": "gpu"}, "engine='gpu'")]:
        with pytest.raises(InputError, match=message):
            app(args)
    with pytest.raises(InputError, match="not both"):
        Scale.parse(2, "1:3")


def test_run_on_ray_fails_in_one_line_when_the_actors_cannot_load_the_model(ray_cluster: RayCluster, cli, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "questions.jsonl", qa_inputs(3))
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    out = tmp_path / "answers.jsonl"
    run = cli("run", str(empty), "--input", str(source), "--output", str(out), "--ray", ray_cluster.address, "--threads", "1",
              env=ray_cluster.env())
    assert run.code == 1
    last = run.err.strip().splitlines()[-1]
    assert last.startswith("error: batch scoring failed on Ray: ") and "no config.json" in last and "run the same command again" in last
    assert not out.exists() or out.read_bytes() == b""
