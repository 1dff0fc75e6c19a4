"""`sonodiff listen`: a local listening test (blind A/B preference and 1-5 ratings) and its report.

A *study* compares two or more systems, each a folder of clips; clips with the same file stem in every folder
are one *item* (the same prompt), its prompt read from a ``stem.json`` sidecar when there is one. Every rater gets
every task of the study (a 1-5 rating of each clip, an A/B preference of each pair of systems on each item) in
an order of their own, with the A/B sides drawn per rater; clips are served under opaque tokens, so nothing on
the page tells the systems apart. Every answer is committed to SQLite at once (WAL, synchronous=FULL): stopping
the server loses nothing, and a rater who comes back with the same name resumes where they stopped.

``sonodiff listen --report ratings.sqlite`` prints the mean opinion score of every system with a 95% confidence
interval (Student t over the ratings) and, for every pair, the preference counts with a two-sided sign test
(exact binomial over the non-tied answers), and draws both.
"""

import asyncio
import hashlib
import hmac
import itertools
import json
import random
import re
import secrets
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SCORES", "Study", "add_parser", "create_listen_app", "plot_report", "report"]

SCORES = {1: "Bad", 2: "Poor", 3: "Fair", 4: "Good", 5: "Excellent"}  # ITU-T P.800 absolute category rating
CHOICES = ("A", "B", "same")
MODES = ("both", "ab", "mos")
_RATER = re.compile(r"^[\w .@-]{1,64}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (
    rater TEXT NOT NULL, task TEXT NOT NULL, kind TEXT NOT NULL, item TEXT NOT NULL,
    system TEXT NOT NULL, system_b TEXT, score INTEGER, choice TEXT, position INTEGER NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (rater, task));
"""


@dataclass(frozen=True)
class Task:
    key: str  # stable and private: "mos|item|system" or "ab|item|system_a|system_b" (systems in study order)
    kind: str  # "mos" or "ab"
    item: str
    systems: tuple[str, ...]  # one (mos) or two (ab), as shown: A then B


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class Study:
    """The systems, items and tasks of one listening test, bound to its SQLite file (created on first use).

    ``systems``: ``name -> folder``. A file made for other systems, items or mode is refused, so a resumed study
    is always the same study."""

    def __init__(self, systems: dict[str, Path], db_path: str | Path, mode: str = "both") -> None:
        from sonodiff.audio.io import AUDIO_EXTENSIONS

        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if len(systems) < 2:
            raise ValueError(f"a listening test compares at least 2 systems, got {len(systems)}: {list(systems)}")
        clips: dict[str, dict[str, Path]] = {}
        for name, folder in systems.items():
            folder = Path(folder)
            if not folder.is_dir():
                raise FileNotFoundError(f"system {name!r}: {folder} is not a folder of clips")
            found = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in AUDIO_EXTENSIONS}
            if not found:
                raise ValueError(f"system {name!r}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {folder}")
            clips[name] = found
        common = sorted(set.intersection(*(set(c) for c in clips.values())))
        if not common:
            raise ValueError("no clip name is in every system's folder (clips of the same prompt must share a file "
                             f"name): {({n: sorted(c)[:3] for n, c in clips.items()})}")
        self.left_out = {n: sorted(set(c) - set(common)) for n, c in clips.items() if set(c) - set(common)}
        self.systems = list(systems)
        self.items = common
        self.mode = mode
        self.clips = {(n, i): clips[n][i] for n in self.systems for i in common}
        self.prompts = {i: self._prompt(i) for i in common}
        self.db_path = Path(db_path)
        self.db = _connect(self.db_path)
        try:
            self.db.executescript(_SCHEMA)
            self.salt = self._bind()
        except BaseException:
            self.db.close()
            raise
        # every clip is served as 16-bit WAV at one rate, with no file metadata: nothing but the sound can tell the
        # systems apart (not the format, the rate, the size of the file, its tags or its modification time)
        import soundfile as sf

        self.sample_rate = max(sf.info(str(p)).samplerate for p in self.clips.values())
        self._wav: dict[str, bytes] = {}
        self.tokens = {self._token("clip", n, i): (n, i) for n, i in self.clips}

    # ------------------------------------------------------------------ set-up
    def _prompt(self, item: str) -> str:
        for n in self.systems:
            side = self.clips[(n, item)].with_suffix(".json")
            if side.is_file():
                try:
                    p = json.loads(side.read_text()).get("prompt")
                except (json.JSONDecodeError, AttributeError) as e:
                    raise ValueError(f"{side}: not a JSON sidecar ({e})") from None
                if p:
                    return str(p)
        return item

    def _bind(self) -> str:
        spec = {"systems": self.systems, "items": self.items, "mode": self.mode}
        rows = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if not rows:
            salt = secrets.token_hex(16)
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("spec", json.dumps(spec)), ("salt", salt), ("created", str(time.time())),
                    ("prompts", json.dumps(self.prompts))])
            return salt
        old = json.loads(rows["spec"])
        if old != spec:
            raise ValueError(f"{self.db_path} holds ratings of another study (systems {old['systems']}, "
                             f"{len(old['items'])} items, mode {old['mode']!r}); given systems {self.systems}, "
                             f"{len(self.items)} items, mode {self.mode!r}: use another --out file")
        return rows["salt"]

    def _token(self, *parts: str) -> str:
        return hmac.new(bytes.fromhex(self.salt), "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()[:20]

    # ------------------------------------------------------------------ tasks
    def tasks(self, rater: str) -> list[Task]:
        """Every task of the study in ``rater``'s own order, with their own A/B sides (the same on every call)."""
        rng = random.Random(self._token("order", rater))
        out = []
        for item in self.items:
            if self.mode in ("both", "mos"):
                out += [Task(f"mos|{item}|{s}", "mos", item, (s,)) for s in self.systems]
            if self.mode in ("both", "ab"):
                for a, b in itertools.combinations(self.systems, 2):
                    shown = (a, b) if rng.random() < 0.5 else (b, a)
                    out.append(Task(f"ab|{item}|{a}|{b}", "ab", item, shown))
        rng.shuffle(out)
        return out

    def check_rater(self, rater) -> str:
        if not isinstance(rater, str) or not _RATER.match(rater.strip()):
            raise ValueError(f"rater: give a name of 1 to 64 letters, digits, spaces or . @ - _; got {rater!r}")
        return rater.strip()

    def done(self, rater: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT task FROM ratings WHERE rater = ?", (rater,))}

    def next_task(self, rater: str) -> dict:
        """What the page shows next: ``{"done", "position", "total", "task"}`` (``task``: opaque id, kind,
        prompt, clip URLs in the order shown)."""
        tasks, done = self.tasks(rater), self.done(rater)
        for pos, t in enumerate(tasks):
            if t.key not in done:
                return {"done": False, "position": len(done), "total": len(tasks),
                        "task": {"id": self._token("task", rater, t.key), "kind": t.kind,
                                 "prompt": self.prompts[t.item],
                                 "clips": [f"/audio/{self._token('clip', s, t.item)}" for s in t.systems]}}
        return {"done": True, "position": len(done), "total": len(tasks), "task": None}

    def rate(self, rater: str, task_id: str, score=None, choice=None) -> None:
        """Store one answer (committed before this returns). A second answer to the same task replaces the first."""
        rater = self.check_rater(rater)
        tasks = self.tasks(rater)
        by_id = {self._token("task", rater, t.key): (p, t) for p, t in enumerate(tasks)}
        if not isinstance(task_id, str) or task_id not in by_id:
            raise ValueError(f"task: {task_id!r} is not a task of rater {rater!r}")
        pos, t = by_id[task_id]
        if t.kind == "mos":
            if isinstance(score, bool) or not isinstance(score, int) or score not in SCORES:
                raise ValueError(f"score: a rating is an integer 1 to 5 ({SCORES}), got {score!r}")
            if choice is not None:
                raise ValueError("choice: a rating task takes a score, not a choice")
        else:
            if choice not in CHOICES:
                raise ValueError(f"choice: an A/B task takes one of {list(CHOICES)}, got {choice!r}")
            if score is not None:
                raise ValueError("score: an A/B task takes a choice, not a score")
        b = t.systems[1] if t.kind == "ab" else None
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT OR REPLACE INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (rater, t.key, t.kind, t.item, t.systems[0], b, score, choice, pos, time.time()))

    def clip(self, token: str) -> Path:
        if token not in self.tokens:
            raise KeyError(token)
        return self.clips[self.tokens[token]]

    def clip_wav(self, token: str) -> bytes:
        """The clip of ``token`` as 16-bit mono-or-stereo WAV at the study's one rate (cached)."""
        if token not in self._wav:
            import io

            import soundfile as sf

            from sonodiff.audio.io import load_audio

            audio, sr = load_audio(self.clip(token), sample_rate=self.sample_rate)
            buf = io.BytesIO()
            sf.write(buf, audio.clamp(-1, 1).numpy().T, sr, format="WAV", subtype="PCM_16")
            self._wav[token] = buf.getvalue()
        return self._wav[token]

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------------------------- the page
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sonodiff listening test</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 .clip { display: flex; align-items: center; gap: 1rem; margin: .6rem 0; }
 .clip b { width: 1.5rem; font-size: 1.3rem; }
 button { font-size: 1rem; padding: .5rem 1rem; margin: .2rem; cursor: pointer; }
 button:disabled { cursor: not-allowed; opacity: .5; }
 #prompt { font-size: 1.2rem; background: #f3f3f3; padding: .6rem; border-radius: .3rem; }
 #progress { color: #666; } .hint { color: #666; font-size: .9rem; }
</style></head><body>
<h1>Listening test</h1>
<div id="login"><p>Your name (use the same name to continue later):</p>
 <input id="rater" autocomplete="off" maxlength="64"> <button id="start">Start</button> <p id="login_error"></p></div>
<div id="test" hidden>
 <p id="progress"></p>
 <p>Prompt: <span id="prompt"></span></p>
 <div id="clips"></div>
 <div id="mos" hidden><p>How good is this clip, for this prompt?</p>
  <span id="scores"></span></div>
 <div id="ab" hidden><p>Which clip is better, for this prompt?</p>
  <button class="choice" data-choice="A">A is better</button>
  <button class="choice" data-choice="same">No preference</button>
  <button class="choice" data-choice="B">B is better</button></div>
 <p class="hint" id="hint">Play every clip to answer.</p>
 <p id="error"></p>
</div>
<div id="finished" hidden><h2>Thank you: every task is done.</h2></div>
<script>
const SCORES = __SCORES__;
let rater = null, task = null, played = new Set();
const $ = (id) => document.getElementById(id);
for (const [v, name] of Object.entries(SCORES)) {
  const b = document.createElement("button"); b.className = "score"; b.dataset.score = v;
  b.textContent = v + " " + name; $("scores").appendChild(b);
}
function ready() {
  const ok = task && played.size >= task.clips.length;
  document.querySelectorAll("button.score, button.choice").forEach((b) => b.disabled = !ok);
  $("hint").hidden = ok;
}
function show(state) {
  if (state.done) { $("test").hidden = true; $("finished").hidden = false; return; }
  task = state.task; played = new Set();
  $("progress").textContent = "Task " + (state.position + 1) + " of " + state.total;
  $("prompt").textContent = task.prompt;
  const clips = $("clips"); clips.innerHTML = "";
  task.clips.forEach((url, i) => {
    const row = document.createElement("div"); row.className = "clip";
    const label = document.createElement("b"); label.textContent = task.clips.length > 1 ? "AB"[i] : "";
    const a = document.createElement("audio"); a.controls = true; a.preload = "auto"; a.src = url;
    a.id = "clip" + i; a.addEventListener("play", () => { played.add(i); ready(); });
    row.append(label, a); clips.appendChild(row);
  });
  $("mos").hidden = task.kind !== "mos"; $("ab").hidden = task.kind !== "ab"; ready();
}
async function call(url, body) {
  const r = await fetch(url, body ? {method: "POST", headers: {"content-type": "application/json"},
                                     body: JSON.stringify(body)} : {});
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
async function answer(extra) {
  $("error").textContent = "";
  try { show(await call("/api/rate", Object.assign({rater: rater, task: task.id}, extra))); }
  catch (e) { $("error").textContent = "Not saved: " + e.message; }
}
$("start").onclick = async () => {
  rater = $("rater").value.trim();
  try { const state = await call("/api/next?rater=" + encodeURIComponent(rater));
        $("login").hidden = true; $("test").hidden = state.done; show(state); }
  catch (e) { $("login_error").textContent = e.message; }
};
document.querySelectorAll("button.score").forEach((b) => b.onclick = () => answer({score: +b.dataset.score}));
document.querySelectorAll("button.choice").forEach((b) => b.onclick = () => answer({choice: b.dataset.choice}));
</script></body></html>
"""


def create_listen_app(study: Study):
    """The FastAPI app of a listening test: ``/`` (the page), ``GET /api/next?rater=``, ``POST /api/rate``
    (JSON ``{rater, task, score | choice}``), ``GET /audio/{token}``. Errors are JSON ``{error, field}``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from sonodiff import __version__

    app = FastAPI(title="sonodiff listening test", version=__version__, docs_url=None, redoc_url=None)
    app.state.study = study
    page = _PAGE.replace("__SCORES__", json.dumps({str(k): v for k, v in SCORES.items()}))

    def bad(e: Exception, status: int = 422):
        msg = str(e)
        return JSONResponse({"error": msg, "field": msg.split(":", 1)[0] if ":" in msg else None}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.get("/api/next")
    async def next_task(rater: str = ""):
        try:
            return study.next_task(study.check_rater(rater))
        except ValueError as e:
            return bad(e)

    @app.post("/api/rate")
    async def rate(request: Request):
        try:
            body = await request.json()
        except ValueError as e:
            return JSONResponse({"error": f"malformed JSON: {e}", "field": "body"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body: send a JSON object {rater, task, score | choice}", "field": "body"},
                                status_code=422)
        unknown = sorted(set(body) - {"rater", "task", "score", "choice"})
        if unknown:
            return JSONResponse({"error": f"{unknown[0]}: unknown field; valid: rater, task, score, choice",
                                 "field": unknown[0]}, status_code=422)
        try:
            rater = study.check_rater(body.get("rater"))
            study.rate(rater, body.get("task"), score=body.get("score"), choice=body.get("choice"))
            return study.next_task(rater)
        except ValueError as e:
            return bad(e)

    @app.get("/audio/{token}")
    async def audio(token: str):
        try:
            data = await asyncio.to_thread(study.clip_wav, token)
        except KeyError:
            return JSONResponse({"error": "token: no such clip", "field": "token"}, status_code=404)
        return Response(data, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    return app


# ---------------------------------------------------------------------------------------------- the report
def report(db_path: str | Path) -> dict:
    """MOS per system (mean, standard deviation, n, 95% t interval over answers and a 95% bootstrap interval over
    raters) and, per pair of systems, preference counts,
    the share preferring the first (ties excluded) with its exact 95% interval and a two-sided sign test."""
    import numpy as np
    from scipy import stats

    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ratings file")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        rows = db.execute("SELECT rater, kind, item, system, system_b, score, choice FROM ratings").fetchall()
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{path}: not a sonodiff listening-test file ({e})") from None
    finally:
        db.close()
    if "spec" not in meta:
        raise ValueError(f"{path}: not a sonodiff listening-test file (no study in it)")
    spec = json.loads(meta["spec"])
    systems = spec["systems"]
    mos = {}
    for s in systems:
        x = np.array([r[5] for r in rows if r[1] == "mos" and r[3] == s], dtype=float)
        n = len(x)
        sd = float(x.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
        mos[s] = {"n": n, "mean": float(x.mean()) if n else float("nan"), "sd": sd,
                  "ci95": [float(x.mean()) - half, float(x.mean()) + half] if n > 1 else [float("nan")] * 2,
                  "raters": len({r[0] for r in rows if r[1] == "mos" and r[3] == s}),
                  "ci95_raters": _rater_bootstrap([(r[0], r[5]) for r in rows if r[1] == "mos" and r[3] == s])}
    pairs = []
    for a, b in itertools.combinations(systems, 2):
        wins_a = wins_b = ties = 0
        for r in rows:
            if r[1] != "ab" or {r[3], r[4]} != {a, b}:
                continue
            if r[6] == "same":
                ties += 1
            elif (r[6] == "A") == (r[3] == a):
                wins_a += 1
            else:
                wins_b += 1
        n = wins_a + wins_b
        row = {"a": a, "b": b, "prefer_a": wins_a, "prefer_b": wins_b, "no_preference": ties,
               "share_a": wins_a / n if n else float("nan"), "share_a_ci95": [float("nan")] * 2,
               "p_value": float("nan")}
        if n:
            t = stats.binomtest(wins_a, n, 0.5)
            ci = t.proportion_ci(0.95)
            row.update(p_value=float(t.pvalue), share_a_ci95=[float(ci.low), float(ci.high)])
        pairs.append(row)
    return {"file": str(path), "systems": systems, "items": len(spec["items"]), "mode": spec["mode"],
            "raters": len({r[0] for r in rows}), "ratings": len(rows), "mos": mos, "preference": pairs}


def _rater_bootstrap(ratings: list[tuple[str, int]], resamples: int = 4000, seed: int = 0) -> list[float]:
    """95% percentile interval of the MOS when raters, not answers, are the sampled unit: raters are drawn with
    replacement, each bringing all of their answers (seeded). Needs at least 2 raters (else NaN)."""
    import numpy as np

    by = {}
    for rater, score in ratings:
        by.setdefault(rater, []).append(score)
    if len(by) < 2:
        return [float("nan")] * 2
    sums = np.array([sum(v) for v in by.values()], dtype=float)
    counts = np.array([len(v) for v in by.values()], dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(by), size=(resamples, len(by)))
    means = sums[idx].sum(1) / counts[idx].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def _no_nan(x):
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_no_nan(v) for v in x]
    return x


def format_report(rep: dict) -> str:
    lines = [f"{rep['file']}: {rep['raters']} raters, {rep['ratings']} answers, {len(rep['systems'])} systems, "
             f"{rep['items']} items", ""]
    if any(m["n"] for m in rep["mos"].values()):
        lines += ["MOS (1-5; 95% intervals: Student t over answers, and bootstrap over raters)",
                  f"{'system':24} {'n':>5} {'raters':>6} {'MOS':>6} {'95% CI (t)':>15} {'95% CI (raters)':>16} {'sd':>6}"]
        for s, m in rep["mos"].items():
            ci = "-" if m["n"] < 2 else f"[{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]"
            cr = "-" if m["raters"] < 2 else f"[{m['ci95_raters'][0]:.2f}, {m['ci95_raters'][1]:.2f}]"
            lines.append(f"{s:24} {m['n']:5d} {m['raters']:6d} {m['mean']:6.2f} {ci:>15} {cr:>16} {m['sd']:6.2f}")
        lines.append("")
    if rep["preference"] and any(p["prefer_a"] + p["prefer_b"] + p["no_preference"] for p in rep["preference"]):
        lines += ["A/B preference (sign test over the answers that chose; two-sided)",
                  f"{'A':16} {'B':16} {'A':>4} {'B':>4} {'same':>5} {'A share':>8} {'95% CI':>15} {'p':>8}"]
        for p in rep["preference"]:
            ci = "-" if p["prefer_a"] + p["prefer_b"] == 0 else f"[{p['share_a_ci95'][0]:.2f}, {p['share_a_ci95'][1]:.2f}]"
            lines.append(f"{p['a']:16} {p['b']:16} {p['prefer_a']:4d} {p['prefer_b']:4d} {p['no_preference']:5d} "
                         f"{p['share_a']:8.2f} {ci:>15} {p['p_value']:8.3g}")
    lines += ["", "The t interval and the sign test treat every answer as independent; answers of one rater are not, so "
              "with few raters read the rater-bootstrap interval (it needs 2 raters or more)."]
    return "\n".join(lines)


def plot_report(rep: dict, path: str | Path) -> None:
    """MOS bars with their 95% intervals, and stacked preference bars per pair, in one PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sonodiff.utils.atomic import atomic_path

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.3]})
    names = rep["systems"]
    means = [rep["mos"][s]["mean"] for s in names]
    err = np.array([[m - rep["mos"][s]["ci95"][0], rep["mos"][s]["ci95"][1] - m] if rep["mos"][s]["n"] > 1
                    else [0, 0] for s, m in zip(names, means)]).T
    ax1.bar(names, np.nan_to_num(means), yerr=err, capsize=6, color="#4c78a8")
    ax1.set_ylim(1, 5)
    ax1.set_ylabel("MOS (95% CI)")
    ax1.set_title("Ratings")
    for i, s in enumerate(names):
        ax1.text(i, 1.05, f"n={rep['mos'][s]['n']}", ha="center", va="bottom", color="white", fontsize=8)
    labels, a, t, b = [], [], [], []
    for p in rep["preference"]:
        n = p["prefer_a"] + p["prefer_b"] + p["no_preference"]
        labels.append(f"{p['a']}\nvs {p['b']}\np={p['p_value']:.3g}")
        a.append(p["prefer_a"] / n if n else 0)
        t.append(p["no_preference"] / n if n else 0)
        b.append(p["prefer_b"] / n if n else 0)
    y = np.arange(len(labels))
    ax2.barh(y, a, color="#4c78a8", label="prefer first")
    ax2.barh(y, t, left=a, color="#bbbbbb", label="no preference")
    ax2.barh(y, b, left=np.add(a, t), color="#f58518", label="prefer second")
    ax2.set_yticks(y, labels, fontsize=8)
    ax2.set_xlim(0, 1)
    ax2.axvline(0.5, color="k", lw=0.5)
    ax2.set_xlabel("share of answers")
    ax2.set_title("A/B preference")
    ax2.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{rep['raters']} raters, {rep['ratings']} answers")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- the CLI
def _systems(dirs: list[str], names: list[str] | None) -> dict[str, Path]:
    if names and len(names) != len(dirs):
        raise ValueError(f"--names: give one name per system folder ({len(dirs)}), got {len(names)}")
    out = {}
    for k, d in enumerate(dirs):
        n = names[k] if names else Path(d).resolve().name
        if n in out:
            raise ValueError(f"two systems are called {n!r}: give --names")
        out[n] = Path(d)
    return out


def _listen(args) -> int:
    if args.report:
        if args.systems:
            raise ValueError("--report reads a ratings file: give no system folders with it")
        rep = report(args.report)
        print(format_report(rep))
        if args.json:
            from sonodiff.utils.atomic import atomic_write_json

            atomic_write_json(args.json, _no_nan(rep))  # strict JSON: an undefined figure is null
        plot = args.plot or str(Path(args.report).with_suffix(".png"))
        plot_report(rep, plot)
        print(f"\nplot: {plot}")
        return 0
    if not args.out:
        raise ValueError("--out: name the ratings file (e.g. --out ratings.sqlite)")
    import uvicorn

    study = Study(_systems(args.systems, args.names), args.out, mode=args.mode)
    for n, left in study.left_out.items():
        print(f"note: {len(left)} clip(s) of {n!r} have no counterpart in every other system and are not used: "
              f"{left[:5]}", file=sys.stderr)
    print(f"listening test of {study.systems} on {len(study.items)} items ({len(study.tasks('x'))} tasks a rater), "
          f"ratings in {study.db_path}: open http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(create_listen_app(study), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_parser(sub) -> None:
    from sonodiff.serve.cli import _guard

    p = sub.add_parser("listen", help="a blind listening test (A/B preference, 1-5 ratings) over folders of clips; "
                                      "--report summarises one")
    p.add_argument("systems", nargs="*", metavar="SYSTEM_DIR", help="two or more folders of clips; clips of the "
                   "same prompt share a file name")
    p.add_argument("--out", help="the SQLite file the ratings go to (reused to resume)")
    p.add_argument("--names", nargs="+", help="system names (default: the folder names)")
    p.add_argument("--mode", choices=MODES, default="both", help="A/B pairs, 1-5 ratings, or both (default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8010)
    p.add_argument("--log-level", default="warning")
    p.add_argument("--report", metavar="RATINGS", help="print MOS and preference statistics of a ratings file")
    p.add_argument("--plot", help="with --report: the PNG to draw (default: next to the ratings file)")
    p.add_argument("--json", help="with --report: also write the figures as JSON")
    p.set_defaults(func=_guard(_listen))
