"""``zoo serve`` driven by real clients: tritonclient (binary and JSON tensors), requests, curl."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

import zoo
from tests.serve.conftest import HeldRequest, Served, start_server

CONTEXT = ("The Denver Broncos defeated the Carolina Panthers 24-10 to win Super Bowl 50, played on February 7, 2016, "
           "at Levi's Stadium in Santa Clara, California. The Broncos' defense was led by Von Miller.")
HOLD_S = 1.0  # how long held requests stay in flight after SIGTERM: a slow client, or a long engine call
QUESTIONS = [f"Who won game {i} of the season?" if i % 3 else f"Where was match {i} played in California?" for i in range(32)]


@pytest.fixture(scope="module")
def qa_pipe(qa_repo: Path):  # noqa: ANN201
    return zoo.load(str(qa_repo), threads=1)


def test_health_metadata_and_unknown_models(qa_server: Served, qa_repo: Path) -> None:
    import tritonclient.http as http

    client = http.InferenceServerClient(qa_server.hostport)
    assert client.is_server_live() and client.is_server_ready()
    name = qa_repo.name
    assert client.is_model_ready(name)
    meta = client.get_model_metadata(name)
    assert {i["name"] for i in meta["inputs"]} >= {"question", "context", "input_ids"}
    assert {o["name"] for o in meta["outputs"]} >= {"answer", "score", "start", "end", "start_logits"}
    server = qa_server.get("/v2").json()
    assert server["name"] == "obert-zoo" and name in server["models"]
    missing = qa_server.get("/v2/models/nope")
    assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["error"]
    assert qa_server.post("/v2/models/nope/infer", json={"inputs": []}).status_code == 404


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_text_inference_equals_the_pipeline(qa_server: Served, qa_repo: Path, qa_pipe, binary: bool) -> None:  # noqa: ANN001
    import tritonclient.http as http

    client = http.InferenceServerClient(qa_server.hostport)
    q = http.InferInput("question", [2], "BYTES")
    q.set_data_from_numpy(np.array([QUESTIONS[0].encode(), QUESTIONS[1].encode()], dtype=object), binary_data=binary)
    c = http.InferInput("context", [1], "BYTES")
    c.set_data_from_numpy(np.array([CONTEXT.encode()], dtype=object), binary_data=binary)
    outputs = None if binary else [http.InferRequestedOutput(n, binary_data=False) for n in ("answer", "score", "start", "end")]
    result = client.infer(qa_repo.name, [q, c], outputs=outputs)
    for i, question in enumerate(QUESTIONS[:2]):
        alone = qa_pipe(question=question, context=CONTEXT)
        answer = result.as_numpy("answer")[i]
        assert (answer.decode() if isinstance(answer, bytes) else answer) == alone["answer"]
        assert int(result.as_numpy("start")[i]) == alone["start"] and int(result.as_numpy("end")[i]) == alone["end"]
        assert abs(float(result.as_numpy("score")[i]) - alone["score"]) < 1e-6


def test_tritonclient_token_inputs_return_the_engines_logits(qa_server: Served, qa_repo: Path, qa_pipe) -> None:  # noqa: ANN001
    import tritonclient.http as http

    ids = np.array([[2, 15, 16, 17, 3, 20, 21, 3], [2, 18, 19, 3, 22, 3, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    inputs = []
    for name, value in (("input_ids", ids), ("attention_mask", mask)):
        t = http.InferInput(name, list(value.shape), "INT64")
        t.set_data_from_numpy(value)
        inputs.append(t)
    result = client_infer = http.InferenceServerClient(qa_server.hostport).infer(qa_repo.name, inputs)
    expected = qa_pipe.engine(ids, mask, np.zeros_like(ids))
    for name in ("start_logits", "end_logits"):
        np.testing.assert_allclose(client_infer.as_numpy(name), expected[name], atol=1e-5)
    assert result.as_numpy("start_logits").shape == ids.shape


def test_task_route_answers_what_zoo_run_json_prints(qa_server: Served, qa_repo: Path, cli) -> None:  # noqa: ANN001
    body = json.dumps({"inputs": {"question": QUESTIONS[0], "context": CONTEXT}, "parameters": {"top_k": 3}})
    curl = subprocess.run(["curl", "-sS", "-X", "POST", f"{qa_server.url}/models/{qa_repo.name}", "-H", "Content-Type: application/json",
                           "-d", body], capture_output=True, text=True, timeout=60)
    assert curl.returncode == 0, curl.stderr
    served = json.loads(curl.stdout)
    run = cli("run", str(qa_repo), "--question", QUESTIONS[0], "--context", CONTEXT, "--top-k", "3", "--json", "--threads", "1")
    assert run.code == 0, run.err
    printed = run.json()["result"]  # one JSON line: {"line": 1, "result": R}, R exactly what the route returns
    assert served == printed and len(served) == 3


def test_32_concurrent_requests_are_batched_and_equal_to_answers_served_alone(qa_server: Served, qa_repo: Path, qa_pipe) -> None:  # noqa: ANN001
    def ask(question: str) -> dict:
        r = qa_server.post(f"/models/{qa_repo.name}", json={"inputs": {"question": question, "context": CONTEXT}})
        assert r.status_code == 200, r.text
        return r.json()

    before = _metric(qa_server, "zoo_batch_requests_count", qa_repo.name)
    with ThreadPoolExecutor(32) as pool:
        served = list(pool.map(ask, QUESTIONS))
    for question, got in zip(QUESTIONS, served, strict=True):
        alone = qa_pipe(question=question, context=CONTEXT)
        assert (got["answer"], got["start"], got["end"]) == (alone["answer"], alone["start"], alone["end"])
        assert abs(got["score"] - alone["score"]) < 1e-6
    batches = _metric(qa_server, "zoo_batch_requests_count", qa_repo.name) - before
    assert 0 < batches < len(QUESTIONS), f"{batches} engine calls for {len(QUESTIONS)} concurrent requests: nothing was merged"


def test_metrics_count_requests_per_route_and_status(qa_server: Served, qa_repo: Path) -> None:
    route = f'route="/models/{qa_repo.name}",status="200"'
    before = _counter(qa_server, "zoo_requests_total", route)
    assert qa_server.post(f"/models/{qa_repo.name}", json={"inputs": {"question": "Who won?", "context": CONTEXT}}).status_code == 200
    assert _counter(qa_server, "zoo_requests_total", route) == before + 1
    text = qa_server.get("/metrics").text
    for family in ("zoo_request_seconds_bucket", "zoo_queue_seconds_bucket", "zoo_inference_seconds_bucket", "zoo_batch_size_bucket",
                   "zoo_queue_depth", "zoo_model_load_seconds"):
        assert family in text, family


def test_bad_requests_get_json_errors_never_tracebacks(qa_server: Served, qa_repo: Path) -> None:
    name = qa_repo.name
    cases = [
        ("/v2/models/{}/infer", b"{not json", 400, "not valid JSON"),
        ("/v2/models/{}/infer", json.dumps({"inputs": [{"name": "question", "datatype": "BYTES", "shape": [1], "data": ["q"]}]}).encode(),
         400, "'question' and 'context'"),
        ("/v2/models/{}/infer", json.dumps({"inputs": [{"name": "question", "datatype": "BYTES", "shape": [2], "data": ["q"]}]}).encode(),
         400, "needs 2 elements"),
        ("/v2/models/{}/infer", json.dumps({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 3],
                                                        "data": [1, 2, 999999]}]}).encode(), 400, "token ids must lie in"),
        ("/models/{}", json.dumps({"inputs": {"question": 5, "context": "c"}}).encode(), 400, "as strings"),
        ("/models/{}", json.dumps({"inputs": {"question": "q", "context": CONTEXT}, "parameters": {"top_k": 0}}).encode(), 400, "top_k"),
        ("/models/{}", json.dumps({"inputs": {"question": "q", "context": CONTEXT}, "parameters": {"bogus": 1}}).encode(), 400,
         "unknown parameter"),
    ]
    for path, body, status, text in cases:
        r = qa_server.post(path.format(name), data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status and text in r.json()["error"], (path, body[:80], r.status_code, r.text)
    assert "Traceback" not in qa_server.stderr()


def test_body_limit_queue_bound_and_timeout(qa_repo: Path, tmp_path: Path) -> None:
    served = start_server(str(qa_repo), "--threads", "1", "--max-body-mb", "0.01", "--max-queue", "1", "--max-wait-ms", "0",
                          env={"ZOO_HOME": str(tmp_path)})
    try:
        big = served.post(f"/models/{qa_repo.name}", json={"inputs": {"question": "q", "context": "x " * 20_000}})
        assert big.status_code == 413 and "limit" in big.json()["error"]
        long_context = " ".join(["The Broncos won the game in California."] * 60)[:9000]

        def ask(i: int) -> tuple[int, str | None]:
            r = served.post(f"/models/{qa_repo.name}", json={"inputs": {"question": f"Who won {i}?", "context": long_context}})
            return r.status_code, r.headers.get("Retry-After")

        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(ask, range(24)))
        codes = [c for c, _ in results]
        assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
        assert all(retry == "1" for c, retry in results if c == 503)
    finally:
        assert served.stop() == 0
    assert "Traceback" not in served.stderr()


def test_bearer_token_is_required_except_for_health_and_metrics(qa_repo: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    served = start_server(str(qa_repo), "--threads", "1", "--token-file", str(token), env={"ZOO_HOME": str(tmp_path)})
    try:
        path = f"/models/{qa_repo.name}"
        body = {"inputs": {"question": "Who won?", "context": CONTEXT}}
        assert served.post(path, json=body).status_code == 401
        assert served.post(path, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert served.get(f"/v2/models/{qa_repo.name}").status_code == 401
        assert served.post(path, json=body, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert served.get("/v2/health/ready").status_code == 200 and served.get("/metrics").status_code == 200
    finally:
        served.stop()
    assert "s3cret-token" not in served.stderr()


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(qa_repo: Path, qa_pipe, tmp_path: Path) -> None:  # noqa: ANN001
    served = start_server(str(qa_repo), "--threads", "1", env={"ZOO_HOME": str(tmp_path)})
    route = f"/models/{qa_repo.name}"
    held = [HeldRequest(served.url, route, {"inputs": {"question": q, "context": CONTEXT}}) for q in QUESTIONS[:4]]
    _wait_until(lambda: _counter(served, "zoo_requests_in_flight", f'route="{route}"') == 4, "the server to receive 4 requests")
    served.proc.send_signal(signal.SIGTERM)
    _wait_until(lambda: "stopping" in served.stderr(), "the server to start draining")
    assert "waiting up to 30 s for 4 requests in flight" in served.stderr()
    with pytest.raises(requests.ConnectionError):
        served.get("/v2/health/live")  # no longer accepting
    time.sleep(HOLD_S)  # the requests stay in flight well past any fixed grace period (uvicorn's own is 0.1 s)
    assert served.proc.poll() is None, served.stderr()[-2000:]
    answers = [h.answer() for h in held]  # their bodies complete only now, while the server drains
    rc = served.proc.wait(timeout=60)
    for question, (status, got) in zip(QUESTIONS[:4], answers, strict=True):
        alone = qa_pipe(question=question, context=CONTEXT)
        assert status == 200 and (got["answer"], got["start"], got["end"]) == (alone["answer"], alone["start"], alone["end"]), got
    assert rc == 0, served.stderr()[-2000:]
    assert "stopped (requests in flight were answered)" in served.stderr()


def test_drain_timeout_cuts_requests_still_running_with_503_and_exits_1(qa_repo: Path, tmp_path: Path) -> None:
    served = start_server(str(qa_repo), "--threads", "1", "--drain-timeout", "0.2", env={"ZOO_HOME": str(tmp_path)})
    route = f"/models/{qa_repo.name}"
    held = [HeldRequest(served.url, route, {"inputs": {"question": q, "context": CONTEXT}}) for q in QUESTIONS[:2]]
    _wait_until(lambda: _counter(served, "zoo_requests_in_flight", f'route="{route}"') == 2, "the server to receive 2 requests")
    rc = served.stop()
    answers = [h.answer(send_rest=False) for h in held]  # their bodies never complete: still running at the deadline
    assert rc == 1 and all(status == 503 and "drain timeout" in body["error"] for status, body in answers), (rc, answers)
    err = served.stderr()
    assert "waiting up to 0.2 s for 2 requests in flight" in err
    assert err.count("cutting") == 1 and "after the 0.2 s drain timeout, cutting 2 requests still running" in err, err[-2000:]
    assert "stopped (requests in flight were answered)" not in err and "timeout graceful shutdown" not in err and "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_second_signal_during_the_drain_stops_at_once_with_one_line(qa_repo: Path, tmp_path: Path, sig: int) -> None:
    served = start_server(str(qa_repo), "--threads", "1", env={"ZOO_HOME": str(tmp_path)})  # the drain would wait 30 s
    route = f"/models/{qa_repo.name}"
    held = [HeldRequest(served.url, route, {"inputs": {"question": q, "context": CONTEXT}}) for q in QUESTIONS[:2]]
    _wait_until(lambda: _counter(served, "zoo_requests_in_flight", f'route="{route}"') == 2, "the server to receive 2 requests")
    served.proc.send_signal(sig)
    _wait_until(lambda: "stopping" in served.stderr(), "the server to start draining")
    served.proc.send_signal(sig)
    rc = served.proc.wait(timeout=20)  # well inside the 30 s drain
    answers = [h.answer(send_rest=False) for h in held]
    assert rc == 1 and all(status == 503 and "second signal" in body["error"] for status, body in answers), (rc, answers)
    _wait_until(lambda: "cutting" in served.stderr(), "the server's last line")
    err = served.stderr()
    assert err.count("cutting") == 1 and "stopped at once (second signal), cutting 2 requests in flight" in err, err[-2000:]
    assert "Traceback" not in err and "ERROR" not in err and "drain timeout" not in err and "were answered" not in err, err[-2000:]


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_classification_over_triton_and_the_task_route(clf_server: Served, mnli_repo: Path) -> None:
    import tritonclient.http as http

    clf = zoo.load(str(mnli_repo), threads=1)
    client = http.InferenceServerClient(clf_server.hostport)
    t = http.InferInput("text", [2], "BYTES")
    t.set_data_from_numpy(np.array([b"The game was played.", b"Nobody came."], dtype=object))
    p = http.InferInput("text_pair", [2], "BYTES")
    p.set_data_from_numpy(np.array([b"A game happened.", b"The stadium was full."], dtype=object))
    result = client.infer(mnli_repo.name, [t, p])
    for i, pair in enumerate((("The game was played.", "A game happened."), ("Nobody came.", "The stadium was full."))):
        alone = clf(*pair)
        assert result.as_numpy("label")[i].decode() == alone["label"]
        assert abs(float(result.as_numpy("score")[i]) - alone["score"]) < 1e-6
    routed = clf_server.post(f"/models/{mnli_repo.name}", json={"inputs": {"text": "a", "text_pair": "b"}, "parameters": {"top_k": 3}})
    assert routed.status_code == 200 and routed.json() == clf("a", "b", top_k=3)


def _metric(served: Served, family: str, model: str) -> float:
    return _counter(served, family, f'model="{model}"')


def _counter(served: Served, family: str, labels: str) -> float:
    for line in served.get("/metrics").text.splitlines():
        if line.startswith(family + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_offline_start_from_the_cache_validates_once(cli, mirror, isolated_home: Path, monkeypatch) -> None:  # noqa: ANN001
    from tests.fetch.conftest import MODEL

    assert cli("download", MODEL, "--no-validate").code == 0
    mirror.stop()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: any network use would fail
    served = start_server(MODEL, "--offline", "--threads", "1")
    try:
        assert served.get(f"/v2/models/{MODEL}/ready").status_code == 200
        r = served.post(f"/models/{MODEL}", json={"inputs": {"question": "Who won?", "context": CONTEXT}})
        assert r.status_code == 200 and {"answer", "score", "start", "end"} <= set(r.json())
        assert "outputs match" in served.stderr()  # the first load of a catalog model is validated, as with zoo.load
        metrics = served.get("/metrics").text
        assert f'zoo_model_validation{{field="outputs_match",model="{MODEL}"}} 1.0' in metrics
    finally:
        assert served.stop() == 0


def test_serve_without_models_or_with_a_bad_config_is_one_line(cli, tmp_path: Path) -> None:  # noqa: ANN001
    res = cli("serve")
    assert res.code == 1 and res.err.count("\n") == 1 and "name at least one model" in res.err
    bad = tmp_path / "serve.toml"
    bad.write_text('[[models]]\nmodel = "x"\nmax_batch = 0\n')
    res = cli("serve", "--config", str(bad))
    assert res.code == 1 and res.err.count("\n") == 1 and "'max_batch' must be" in res.err
    res = cli("serve", "obert-3l-85", "--offline")
    assert res.code == 1 and "unknown model" in res.err and "Traceback" not in res.err


def test_config_file_declares_models_with_aliases(qa_repo: Path, mnli_repo: Path, tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(f'max_wait_ms = 1\n\n[[models]]\nmodel = "{qa_repo}"\naliases = ["qa"]\nmax_batch = 4\n\n'
                      f'[[models]]\nmodel = "{mnli_repo}"\naliases = ["nli"]\n')
    served = start_server("--config", str(config), "--threads", "1", env={"ZOO_HOME": str(tmp_path / "home")})
    try:
        assert served.get("/v2/models/qa").json()["parameters"]["max_batch"] == 4
        assert served.post("/models/qa", json={"inputs": {"question": "Who won?", "context": CONTEXT}}).status_code == 200
        assert "label" in served.post("/models/nli", json={"inputs": "A game happened."}).json()
    finally:
        served.stop()
