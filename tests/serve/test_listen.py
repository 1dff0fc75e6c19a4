"""`sonodiff listen`: tasks per rater, blindness, answers that survive a killed server, resuming, bad input,
and the report's statistics against closed-form values."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from tests.serve.conftest import free_port
from sonodiff.serve.listen import Study, create_listen_app, format_report, plot_report, report

REPO = Path(__file__).resolve().parents[2]


def make_systems(root: Path, names=("sysA", "sysB", "sysC"), items=("dog", "rain", "bell"), extra=None):
    out = {}
    for k, n in enumerate(names):
        d = root / n
        d.mkdir(parents=True, exist_ok=True)
        for j, it in enumerate(items):
            t = np.arange(4000) / 8000
            sf.write(d / f"{it}.wav", (0.3 * np.sin(2 * np.pi * (200 + 100 * k + 30 * j) * t)).astype("float32"), 8000)
            (d / f"{it}.json").write_text(json.dumps({"prompt": f"a {it} sound"}))
        out[n] = d
    if extra:
        sf.write(out[names[0]] / f"{extra}.wav", np.zeros(800, "float32"), 8000)
    return out


def test_tasks_are_complete_blind_and_shuffled_per_rater(tmp_path):
    study = Study(make_systems(tmp_path, extra="only_in_a"), tmp_path / "r.sqlite")
    assert study.items == ["bell", "dog", "rain"] and study.left_out == {"sysA": ["only_in_a"]}
    t1, t2 = study.tasks("ann"), study.tasks("bob")
    assert len(t1) == 3 * 3 + 3 * 3  # 3 items x (3 ratings + 3 pairs)
    assert sorted(t.key for t in t1) == sorted(t.key for t in t2) and len({t.key for t in t1}) == len(t1)
    assert [t.key for t in t1] != [t.key for t in t2] and study.tasks("ann") == t1  # own order, stable
    sides = {t.key: t.systems for t in t1 if t.kind == "ab"}
    assert any(s != tuple(sorted(s)) for s in sides.values()) and any(s == tuple(sorted(s)) for s in sides.values())
    nxt = json.dumps(study.next_task("ann"))
    for secret in ("sysA", "sysB", "sysC", str(tmp_path)):
        assert secret not in nxt  # nothing on the page tells the systems apart
    assert "a " in study.next_task("ann")["task"]["prompt"]  # the prompt comes from the sidecar


def test_page_flow_resume_and_bad_answers(tmp_path):
    systems = make_systems(tmp_path, names=("x", "y"), items=("a", "b"))
    db = tmp_path / "r.sqlite"
    c = TestClient(create_listen_app(Study(systems, db)))
    assert "Listening test" in c.get("/").text
    first = c.get("/api/next", params={"rater": "ann"}).json()
    assert first["total"] == 2 * (2 + 1) and first["position"] == 0
    r = c.get(first["task"]["clips"][0])
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav" and sf.read(__import__("io").BytesIO(r.content))[1] == 8000
    assert c.get("/audio/deadbeef").json()["field"] == "token"
    # blind at the byte level too: every clip is the same format and rate, with no file date or tag in the headers
    heads = [c.get(f"/audio/{t}").headers for t in c.app.state.study.tokens]
    assert {h["content-type"] for h in heads} == {"audio/wav"}
    assert not any("last-modified" in h or "etag" in h for h in heads)
    state = first
    for _ in range(3):
        t = state["task"]
        state = c.post("/api/rate", json={"rater": "ann", "task": t["id"],
                                          **({"score": 4} if t["kind"] == "mos" else {"choice": "A"})}).json()
    assert state["position"] == 3
    t = state["task"]
    mos = t["kind"] == "mos"
    bad = [({"rater": "ann", "task": t["id"], **({"score": 6} if mos else {"choice": "C"})}, "score" if mos else "choice"),
           ({"rater": "ann", "task": t["id"], **({"score": True} if mos else {"choice": 1})}, "score" if mos else "choice"),
           ({"rater": "ann", "task": t["id"], **({"score": 3, "choice": "A"} if mos else {"choice": "A", "score": 3})},
            "choice" if mos else "score"),
           ({"rater": "ann", "task": "nope", "score": 3}, "task"),
           ({"rater": "ann", "task": ["not", "a", "string"], "score": 3}, "task"),
           ({"rater": "", "task": t["id"], "score": 3}, "rater"),
           ({"rater": "ann", "task": t["id"], "score": 3, "colour": 1}, "colour")]
    for body, field in bad:
        r = c.post("/api/rate", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    r = c.post("/api/rate", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    assert c.get("/api/next", params={"rater": "x" * 65}).json()["field"] == "rater"
    # a new server on the same file: ann resumes at task 4, in the same order; another study is refused
    again = Study(systems, db)
    assert again.next_task("ann")["position"] == 3 and again.next_task("ann")["task"]["id"] == t["id"]
    with pytest.raises(ValueError, match="another study"):
        Study({**systems, "z": make_systems(tmp_path / "more", names=("z",), items=("a", "b"))["z"]}, db)
    with pytest.raises(ValueError, match="another study"):
        Study(systems, db, mode="ab")


def test_bad_studies_name_the_problem(tmp_path):
    s = make_systems(tmp_path, names=("x", "y"))
    with pytest.raises(ValueError, match="at least 2"):
        Study({"x": s["x"]}, tmp_path / "a.sqlite")
    with pytest.raises(FileNotFoundError, match="'y'.*not a folder"):
        Study({"x": s["x"], "y": tmp_path / "missing"}, tmp_path / "a.sqlite")
    other = make_systems(tmp_path / "o", names=("z",), items=("cat",))
    with pytest.raises(ValueError, match="no clip name is in every"):
        Study({"x": s["x"], "z": other["z"]}, tmp_path / "a.sqlite")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        Study({"x": s["x"], "e": tmp_path / "empty"}, tmp_path / "a.sqlite")


def test_report_statistics_match_closed_form(tmp_path):
    systems = make_systems(tmp_path, names=("good", "bad"), items=tuple(f"i{k}" for k in range(10)))
    study = Study(systems, tmp_path / "r.sqlite")
    scores = {"good": [4, 5, 4, 5], "bad": [2, 1, 2, 3]}
    used = {"good": 0, "bad": 0}
    ab = 0
    for t in study.tasks("ann"):
        tid = study._token("task", "ann", t.key)
        if t.kind == "mos" and used[t.systems[0]] < 4:
            study.rate("ann", tid, score=scores[t.systems[0]][used[t.systems[0]]])
            used[t.systems[0]] += 1
        elif t.kind == "ab":  # 9 answers prefer "good", 1 "bad"
            pick = "bad" if ab == 9 else "good"
            study.rate("ann", tid, choice="A" if t.systems[0] == pick else "B")
            ab += 1
    rep = report(tmp_path / "r.sqlite")
    g = rep["mos"]["good"]
    assert g["n"] == 4 and g["mean"] == pytest.approx(4.5)
    half = 3.182446305284263 * np.std([4, 5, 4, 5], ddof=1) / 2  # t_{0.975, 3} s / sqrt(n)
    assert g["ci95"] == pytest.approx([4.5 - half, 4.5 + half])
    assert rep["mos"]["bad"]["mean"] == pytest.approx(2.0)
    p = rep["preference"][0]
    assert (p["a"], p["prefer_a"], p["prefer_b"], p["no_preference"]) == ("good", 9, 1, 0)
    assert p["p_value"] == pytest.approx(2 * 11 / 1024)  # two-sided exact binomial, 9 of 10
    assert p["share_a_ci95"][0] < 0.9 < p["share_a_ci95"][1]
    text = format_report(rep)
    assert "good" in text and "0.0215" in text
    plot_report(rep, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError):
        report(tmp_path / "none.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 10)
    with pytest.raises(ValueError, match="not a sonodiff listening-test file"):
        report(tmp_path / "junk.sqlite")


def test_killed_server_loses_no_answer_and_the_cli_reports(tmp_path):
    import httpx

    systems = make_systems(tmp_path, names=("x", "y"), items=("a", "b", "c"))
    db, port = tmp_path / "r.sqlite", free_port()
    cmd = [sys.executable, "-m", "sonodiff", "listen", str(systems["x"]), str(systems["y"]), "--out", str(db),
           "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                state = httpx.get(url + "/api/next", params={"rater": "ann"}).json()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError(proc.stdout.read() if proc.poll() is not None else "server did not start")
        for _ in range(5):
            t = state["task"]
            state = httpx.post(url + "/api/rate", json={"rater": "ann", "task": t["id"],
                                                        **({"score": 3} if t["kind"] == "mos" else {"choice": "same"})}).json()
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown: whatever was answered must already be on disk
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    rep = report(db)
    assert rep["ratings"] == 5 and rep["raters"] == 1
    out = subprocess.run([sys.executable, "-m", "sonodiff", "listen", "--report", str(db), "--json",
                          str(tmp_path / "r.json")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "MOS" in out.stdout and (tmp_path / "r.png").is_file()
    def strict(x):
        raise ValueError(f"not strict JSON: {x}")

    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=strict)["ratings"] == 5
    bad = subprocess.run([sys.executable, "-m", "sonodiff", "listen", str(systems["x"]), "--out", str(db)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "at least 2 systems" in bad.stderr


def test_report_of_a_study_without_answers_is_strict_json(tmp_path):
    from sonodiff.cli import main

    Study(make_systems(tmp_path, names=("x", "y"), items=("a",)), tmp_path / "r.sqlite", mode="ab").close()
    assert main(["listen", "--report", str(tmp_path / "r.sqlite"), "--json", str(tmp_path / "r.json"),
                 "--plot", str(tmp_path / "r.png")]) == 0

    def strict(x):
        raise ValueError(f"not strict JSON: {x}")

    rep = json.loads((tmp_path / "r.json").read_text(), parse_constant=strict)
    assert rep["mos"]["x"]["mean"] is None and rep["preference"][0]["p_value"] is None


def test_rater_bootstrap_interval_is_wide_when_raters_disagree(tmp_path):
    """Two raters, one always 5 and one always 1, 20 answers each: the t interval over the 40 answers is narrow,
    but resampling raters gives means of 1, 3 or 5 (probabilities 1/4, 1/2, 1/4), so its 95% interval is [1, 5]."""
    from sonodiff.serve.listen import _rater_bootstrap

    ratings = [("ann", 5)] * 20 + [("bob", 1)] * 20
    assert _rater_bootstrap(ratings) == [1.0, 5.0]
    assert all(v != v for v in _rater_bootstrap([("ann", 3), ("ann", 4)]))  # one rater: undefined (NaN)
    systems = make_systems(tmp_path, names=("x", "y"), items=tuple(f"i{k}" for k in range(20)))
    study = Study(systems, tmp_path / "r.sqlite", mode="mos")
    for rater, score in (("ann", 5), ("bob", 1)):
        for t in study.tasks(rater):
            if t.systems[0] == "x":
                study.rate(rater, study._token("task", rater, t.key), score=score)
    m = report(tmp_path / "r.sqlite")["mos"]["x"]
    assert m["n"] == 40 and m["raters"] == 2 and m["ci95_raters"] == [1.0, 5.0]
    assert m["ci95"][1] - m["ci95"][0] < 1.5  # the t interval, too narrow for two raters who disagree
    assert "95% CI (raters)" in format_report(report(tmp_path / "r.sqlite"))
