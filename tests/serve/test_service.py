"""`sonodiff serve`: requests, errors, micro-batching, a full queue, time limits, cancellation and streaming,
against tiny exported models (real files, real loaders) and, where the transport matters, a real uvicorn server."""

import email
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient

from sonodiff.pipelines import Pipeline
from sonodiff.serve.app import ServiceConfig, create_app
from sonodiff.serve.scheduler import Job, QueueFull, Scheduler
from tests.pipelines.conftest import make_model_dir
from tests.serve.conftest import UvicornServer as _Server


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {"tiny_labels": Pipeline.from_pretrained(make_model_dir(root / "tiny_labels")),
            "tiny_uncond": Pipeline.from_pretrained(make_model_dir(root / "tiny_uncond", conditioning="none"))}


def _wav(data: bytes):
    a, sr = sf.read(io.BytesIO(data), dtype="float32")
    return a, sr


@pytest.mark.parametrize("body,status,field", [
    ({"prompt": "high", "model": "nope"}, 404, "model"),
    ({"prompt": "middle", "model": "tiny_labels"}, 422, "prompt"),
    ({"prompt": "", "model": "tiny_labels"}, 422, "prompt"),
    ({"prompt": "high" * 200, "model": "tiny_labels"}, 422, "prompt"),
    ({"model": "tiny_labels"}, 422, "prompt"),
    ({"prompt": "high", "model": "tiny_uncond"}, 422, "prompt"),
    ({"prompt": [], "model": "tiny_labels"}, 422, "prompt"),
    ({"prompt": "high", "model": "tiny_labels", "duration": 31}, 422, "duration"),
    ({"prompt": "high", "model": "tiny_labels", "duration": 0}, 422, "duration"),
    ({"prompt": "high", "model": "tiny_labels", "duration": 0.01}, 422, "duration"),
    ({"prompt": "high", "model": "tiny_labels", "steps": 0}, 422, "steps"),
    ({"prompt": "high", "model": "tiny_labels", "steps": 10_000}, 422, "steps"),
    ({"prompt": "high", "model": "tiny_labels", "guidance": -1}, 422, "guidance"),
    ({"prompt": "high", "model": "tiny_labels", "guidance": 1e6}, 422, "guidance"),
    ({"prompt": "high", "model": "tiny_labels", "seed": -3}, 422, "seed"),
    ({"prompt": "high", "model": "tiny_labels", "sampler": "magic"}, 422, "sampler"),
    ({"prompt": "high", "model": "tiny_labels", "format": "mp3"}, 422, "format"),
    ({"prompt": "high", "model": "tiny_labels", "colour": "red"}, 422, "colour"),
    ({"prompt": 5, "model": "tiny_labels"}, 422, "prompt"),
])
def test_bad_requests_name_the_field(pipes, body, status, field):
    with TestClient(create_app(pipes)) as c:
        r = c.post("/generate", json=body)
        assert r.status_code == status, r.text
        assert r.json()["field"] == field and r.json()["error"]
        assert c.get("/health").json()["status"] == "ok"  # nothing crashed


def test_malformed_json_and_bad_stream_query(pipes):
    with TestClient(create_app(pipes)) as c:
        r = c.post("/generate", content=b'{"prompt": "high",', headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["field"] == "body"
        r = c.get("/generate/stream", params={"prompt": "high", "model": "tiny_labels", "duration": "long"})
        assert r.status_code == 422 and r.json()["field"] == "duration"
        r = c.get("/generate/stream", params={"prompt": "nope", "model": "tiny_labels"})
        assert r.status_code == 422 and r.json()["field"] == "prompt"


def test_generate_wav_flac_multipart_and_provenance(pipes, tmp_path):
    pipe = pipes["tiny_labels"]
    with TestClient(create_app(pipes)) as c:
        r = c.post("/generate", json={"prompt": "high", "model": "tiny_labels", "seed": 7, "steps": 4})
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        side = json.loads(r.headers["x-sonodiff-provenance"])
        assert side["prompt"] == "high" and side["seed"] == 7 and side["steps"] == 4 and side["model"] == "tiny_labels"
        a, sr = _wav(r.content)
        assert sr == 8000 and a.shape == (4000,)
        ref = pipe("high", seeds=[7], num_steps=4).audio[0, 0]
        scale = side.get("scaled_from_peak", 1.0) / 0.999 if "scaled_from_peak" in side else 1.0
        np.testing.assert_allclose(a * scale, ref.numpy(), atol=2e-4 * scale)

        r = c.post("/generate", json={"prompt": ["high", "low"], "model": "tiny_labels", "format": "flac"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/mixed")
        msg = email.message_from_bytes(b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content)
        parts = msg.get_payload()
        assert [p.get_content_type() for p in parts] == ["application/json", "audio/flac"] * 2
        sides = [json.loads(parts[i].get_payload(decode=True)) for i in (0, 2)]
        assert [s["prompt"] for s in sides] == ["high", "low"] and [s["seed"] for s in sides] == [0, 1]
        assert sf.read(io.BytesIO(parts[1].get_payload(decode=True)))[1] == 8000

        r = c.post("/generate", json={"model": "tiny_uncond", "duration": 0.75})
        assert r.status_code == 200 and _wav(r.content)[0].shape == (6000,)
        models = {m["name"]: m for m in c.get("/models").json()}
        assert models["tiny_labels"]["labels"] == ["high", "low"] and not models["tiny_uncond"]["takes_prompt"]
        assert "/generate" in c.get("/openapi.json").json()["paths"] and c.get("/docs").status_code == 200


def test_output_dir_only_when_asked(pipes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with TestClient(create_app(pipes)) as c:
        assert c.post("/generate", json={"prompt": "low", "model": "tiny_labels"}).status_code == 200
    assert list(tmp_path.iterdir()) == []  # nothing written without an output folder
    out = tmp_path / "clips"
    with TestClient(create_app(pipes, ServiceConfig(output_dir=str(out)))) as c:
        r = c.post("/generate", json={"prompt": "low", "model": "tiny_labels"})
    saved = json.loads(r.headers["x-sonodiff-provenance"])["saved_as"]
    assert sorted(p.name for p in out.iterdir()) == sorted([saved, saved.replace(".wav", ".json")])
    assert (out / saved).read_bytes() == r.content


def test_micro_batch_equals_one_by_one(pipes):
    pipe = pipes["tiny_labels"]
    sched = Scheduler(pipes, max_batch=8, batch_wait_s=0.5)
    try:
        jobs = [sched.submit(Job("tiny_labels", p, s, {"num_steps": 4})) for p, s in
                [("high", 3), ("low", 4), ("high", 5)]]
        other = sched.submit(Job("tiny_labels", "low", 6, {"num_steps": 5}))  # other settings: its own batch
        outs = [j.future.result(60)[0] for j in jobs]
        other.future.result(60)
    finally:
        sched.close()
    assert sched.stats["batches"] == 2 and sched.stats["rows"] == 4
    # the three clips were one network call: exactly what the pipeline gives for them together ...
    together = pipe([j.prompt for j in jobs], seeds=[j.seed for j in jobs], num_steps=4)
    for k, o in enumerate(outs):
        torch.testing.assert_close(o, together.audio[k], atol=0, rtol=0)
    # ... and each clip's features are the ones it gets alone (float rounding; Griffin-Lim then amplifies it a little)
    for k, j in enumerate(jobs):
        alone = pipe(j.prompt, seeds=[j.seed], num_steps=4)
        torch.testing.assert_close(together.features[k], alone.features[0], atol=1e-5, rtol=1e-5)


class _Gated:
    """A real pipeline whose calls wait until ``gate`` is set (to hold the worker busy deterministically)."""

    def __init__(self, pipe, gate, fail=False):
        self._pipe, self.gate, self.fail = pipe, gate, fail

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, *a, **k):
        self.gate.wait(30)
        if self.fail:
            raise RuntimeError("simulated failure")
        return self._pipe(*a, **k)


def test_full_queue_is_503_with_retry_after_and_failures_are_500(pipes):
    gate = threading.Event()
    gated = {"tiny_labels": _Gated(pipes["tiny_labels"], gate), "broken": _Gated(pipes["tiny_labels"], gate, fail=True)}
    app = create_app(gated, ServiceConfig(max_queue=2, max_batch=1, batch_wait_s=0))
    sched = app.state.scheduler
    with TestClient(app) as c:
        results = {}

        def post(i, model="tiny_labels"):
            results[i] = c.post("/generate", json={"prompt": "high", "model": model, "seed": i})

        threads = [threading.Thread(target=post, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.3)  # the first one is taken by the worker (blocked at the gate), two wait
        assert sched.waiting == 2
        with pytest.raises(QueueFull):
            sched.submit(Job("tiny_labels", "high", 9, {}))
        r = c.post("/generate", json={"prompt": "high", "model": "tiny_labels"})
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "queue is full" in r.json()["error"]
        gate.set()
        for t in threads:
            t.join(60)
        assert all(results[i].status_code == 200 for i in range(3))
        r = c.post("/generate", json={"prompt": "high", "model": "broken"})
        assert r.status_code == 500 and "simulated failure" in r.json()["error"]
        assert c.post("/generate", json={"prompt": "low", "model": "tiny_labels"}).status_code == 200


def test_time_limit_is_504_and_stops_the_work(pipes):
    app = create_app(pipes, ServiceConfig(timeout_s=0.3, max_duration_s=60))
    with TestClient(app) as c:
        r = c.post("/generate", json={"prompt": "high", "model": "tiny_labels", "duration": 5, "steps": 200})
        assert r.status_code == 504 and "limit" in r.json()["error"]
        s = app.state.scheduler
        for _ in range(200):
            if s.stats["aborted_batches"] or s.stats["timed_out"] or s.stats["cancelled"]:
                break
            time.sleep(0.05)
        assert s.stats["completed"] == 0 and s.stats["sampler_steps"] < 200


def test_stream_first_audio_arrives_early_and_matches_pipeline(pipes):
    import httpx

    pipe = pipes["tiny_labels"]
    app = create_app(pipes)
    with _Server(app) as srv:
        t0 = time.monotonic()
        first, data = None, b""
        with httpx.stream("GET", srv.url + "/generate/stream", timeout=60,
                          params={"prompt": "low", "model": "tiny_labels", "duration": 6.0, "seed": 2, "steps": 6}) as r:
            assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
            assert json.loads(r.headers["x-sonodiff-provenance"])["streamed"] is True
            for piece in r.iter_raw():
                data += piece
                if first is None and len(data) > 44:
                    first = time.monotonic() - t0
        total = time.monotonic() - t0
        assert app.state.scheduler.stats["stream_chunks"] > 5
    assert first < 0.5 * total, (first, total)
    a, sr = _wav(data)
    assert sr == 8000 and a.shape == (48000,)
    ref = torch.cat(list(pipe.stream(["low"], duration_s=6.0, seeds=[2], num_steps=6)), dim=-1)[0, 0].clamp(-1, 1)
    np.testing.assert_allclose(a, ref.numpy(), atol=1 / 16000)


def test_stream_disconnect_stops_generating(pipes):
    import httpx

    app = create_app(pipes, ServiceConfig(max_duration_s=30))
    sched = app.state.scheduler
    with _Server(app) as srv:
        with httpx.stream("GET", srv.url + "/generate/stream", timeout=60,
                          params={"prompt": "low", "model": "tiny_labels", "duration": 30, "steps": 6}) as r:
            got = 0
            for piece in r.iter_raw():
                got += len(piece)
                if got > 44 + 4000:
                    break
        for _ in range(200):
            if sched.stats["cancelled"]:
                break
            time.sleep(0.05)
        assert sched.stats["cancelled"] == 1 and sched.stats["completed"] == 0
        n = sched.stats["stream_chunks"]
        time.sleep(0.5)
        assert sched.stats["stream_chunks"] == n < 60  # far fewer windows than 30 s would take, and no more after


def test_post_disconnect_cancels_the_work(pipes):
    """A client that sends POST /generate and hangs up before the answer: its clip stops generating."""
    app = create_app(pipes, ServiceConfig(max_duration_s=60))
    sched = app.state.scheduler
    with _Server(app) as srv:
        body = json.dumps({"prompt": "high", "model": "tiny_labels", "duration": 5, "steps": 200}).encode()
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        for _ in range(200):
            if sched.stats["sampler_steps"] > 0:
                break
            time.sleep(0.02)
        s.close()
        for _ in range(200):
            if sched.stats["cancelled"] or sched.stats["aborted_batches"]:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        assert sched.stats["completed"] == 0 and sched.stats["sampler_steps"] < 200, dict(sched.stats)
        assert sched.stats["cancelled"] == 1, str(sched.stats)
