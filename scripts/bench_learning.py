"""Quality against CPU time: train recipe variants for a budget, score their EMA weights at evaluation points.

Each variant (``--variant NAME:key=value,key=value``, overrides on top of ``--recipe``) is trained by
``sonodiff train`` in its own process, alone on the machine (variants run one after another, never side by
side), with a checkpoint every ``--eval-every`` steps kept. The run stops at ``--steps`` or, if sooner, after
``--minutes`` of wall time (SIGTERM: the trainer checkpoints and exits). The budget counts the process's whole
life, feature-cache preparation included (a variant with a new codec setting pays for its cache); the curves'
x-axis is the trainer's own loop time (``train_seconds`` in each checkpoint), which does not include it. Then every kept checkpoint is exported
(EMA weights), ``--per-class`` clips per class are generated at the model's default sampling settings, and
they are scored by the in-house classifier (``sonodiff.eval``), trained once on real held-out audio that no
variant trains on:

- FSDD digits (class-label models): the classifier learns the real FSDD test split; prompts are the labels.
- Corpus text-to-audio models (``--corpus DIR``): it learns the ``test`` + ``test_heldout`` clips of one
  domain; prompts are the captions of ``test_heldout`` clips (combinations never seen in training), each
  scored against its clip's label.

Rows: accuracy, Frechet distance (classifier embedding) and output level (median and maximum peak dBFS, the
share of clips that would clip) against wall minutes and examples seen, next to the calibration rows:

- real train: as many real training clips as there are generated clips (FSDD: the same count per class), so
  that the Frechet distance's small-sample bias is the same as the generated rows';
- resynthesis (unpaired): those training clips through the variant's codec and decoder (Griffin-Lim): what
  the feature space and vocoder cost a set of real clips that are *not* the reference clips. This is the row
  a generated set is compared with;
- resynthesis (paired): the reference clips themselves resynthesised. Each sits next to its own original in
  the embedding, so this distance is far below even real train's; it measures the codec, not a distribution.

``--sampling NAME:key=value,...`` (repeatable) scores each point at other sampling settings too:
``guidance_scale``, ``cfg_rescale``, ``guidance_interval`` (``LO/HI`` noise levels, or ``all``),
``num_steps``, ``sampler``, and ``autoguide`` (autoguidance, Karras et al. 2024: a checkpoint name of the
same run such as ``step_00000725``, or a model directory, guides instead of the unconditional branch).
Prints a Markdown table, writes JSON and a PNG of the curves.

    python scripts/bench_learning.py --recipe fsdd_digits_mel --data ../shared/data/fsdd --out runs/bl \\
        --steps 3000 --minutes 40 --eval-every 1000 --per-class 20 \\
        --variant base: \\
        --variant fast:codec.options.n_mels=32,train.precision=bf16,train.batch_size=32,optim.lr=2e-3

    # guidance of an existing run's last checkpoint: CFG scales, an interval, autoguidance by an early checkpoint
    python scripts/bench_learning.py --recipe fsdd_digits_mel --data ../shared/data/fsdd --out runs/bl \
        --variant fast: --eval-only --last-only --sampling cfg2:guidance_scale=2 \
        --sampling cfg4-interval:guidance_interval=0.4/10 --sampling auto2:autoguide=step_00000725,guidance_scale=2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def parse_variant(spec: str, flag: str = "--variant") -> tuple[str, list[str]]:
    """``NAME:k=v,k=v`` -> (name, ["k=v", ...]); values may not contain commas (use TOML lists via [a;b])."""
    if ":" not in spec:
        raise SystemExit(f"{flag} {spec!r}: expected NAME:key=value,key=value (or NAME: for the recipe as is)")
    name, _, rest = spec.partition(":")
    if not name or "/" in name:
        raise SystemExit(f"{flag} {spec!r}: the name must be non-empty and contain no '/'")
    sets = [s.strip().replace(";", ",") for s in rest.split(",") if s.strip()]
    bad = [s for s in sets if "=" not in s]
    if bad:
        raise SystemExit(f"{flag} {spec!r}: {bad} are not key=value")
    return name, sets


SAMPLING_KEYS = {"guidance_scale": float, "cfg_rescale": float, "num_steps": int, "sampler": str,
                 "guidance_interval": str, "autoguide": str}


def parse_sampling(spec: str) -> tuple[str, dict]:
    """``NAME:k=v,k=v`` -> (name, Pipeline keyword overrides plus ``autoguide``)."""
    name, sets = parse_variant(spec, "--sampling")
    out: dict = {}
    for kv in sets:
        k, _, v = kv.partition("=")
        if k not in SAMPLING_KEYS:
            raise SystemExit(f"--sampling {spec!r}: unknown key {k!r}; valid: {sorted(SAMPLING_KEYS)}")
        if k == "guidance_interval":
            if v == "all":
                out[k] = None
                continue
            try:
                lo, hi = (float(x) for x in v.split("/"))
            except ValueError:
                raise SystemExit(f"--sampling {spec!r}: guidance_interval takes LO/HI noise levels or 'all', "
                                 f"got {v!r}") from None
            out[k] = (lo, hi)
            continue
        try:
            out[k] = SAMPLING_KEYS[k](v)
        except ValueError:
            raise SystemExit(f"--sampling {spec!r}: {k} takes a {SAMPLING_KEYS[k].__name__}, got {v!r}") from None
    return name, out


def levels(audio: torch.Tensor) -> dict:
    """Output level of clips ``[N, T]``: median and maximum peak (dBFS) and the share at or above full scale."""
    peak = audio.abs().amax(dim=-1).clamp_min(1e-6)
    db = 20 * torch.log10(peak)
    return {"peak_db_median": round(db.median().item(), 2), "peak_db_max": round(db.max().item(), 2),
            "clipped": round((peak >= 1.0).double().mean().item(), 4)}


def train_variant(recipe: str, sets: list[str], run_dir: Path, steps: int, every: int, minutes: float,
                  threads: int, log) -> dict:
    """Train (or resume) one variant; returns {"wall_s", "stopped": "steps"|"budget"}."""
    cmd = [sys.executable, "-m", "sonodiff", "train", recipe, "--out", str(run_dir),
           "--set", f"train.steps={steps}", "--set", f"train.checkpoint_every={every}",
           "--set", "train.keep_last=1000", "--set", "train.progress=false", "--set", "demo.every=0",
           "--set", f"train.threads={threads}"]
    for s in sets:
        cmd += ["--set", s]
    log("$ " + " ".join(cmd[2:]))
    t0 = time.time()
    with open(run_dir.parent / f"{run_dir.name}.log", "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO))
        stopped = "steps"
        try:
            proc.wait(timeout=minutes * 60 if minutes > 0 else None)
        except subprocess.TimeoutExpired:
            stopped = "budget"
            proc.send_signal(signal.SIGTERM)  # the trainer finishes the step, checkpoints it and exits
            proc.wait()
    if proc.returncode not in (0, -signal.SIGTERM) and stopped == "steps":
        raise SystemExit(f"training {run_dir.name} failed (exit {proc.returncode}); see {run_dir}.log")
    return {"wall_s": round(time.time() - t0, 1), "stopped": stopped}


def held_out(args, sr: int, seconds: float):
    """(classifier training audio [N, T], labels, prompts and labels to generate, real-train audio, labels)."""
    n = int(round(seconds * sr))

    def fix(a):
        return a[:n] if len(a) >= n else torch.nn.functional.pad(a, (0, n - len(a)))

    from sonodiff.audio.io import load_audio

    if args.corpus:
        rows = [json.loads(x) for x in (Path(args.corpus) / "metadata.jsonl").read_text().splitlines() if x.strip()]
        rows = sorted((r for r in rows if r["domain"] == args.domain), key=lambda r: r["id"])
        ref = [r for r in rows if r["split"] in ("test", "test_heldout")]
        known = {r["label"] for r in ref}  # the classifier knows only the held-out clips' labels
        gen_n = min(args.max_prompts, sum(r["split"] == "test_heldout" for r in ref))
        train = [r for r in rows if r["split"] == "train" and r["label"] in known][: gen_n]
        load = [fix(load_audio(Path(args.corpus) / r["path"], sample_rate=sr, channels="mono")[0][0]) for r in ref]
        tr = [fix(load_audio(Path(args.corpus) / r["path"], sample_rate=sr, channels="mono")[0][0]) for r in train]
        gen = [(r["caption"], r["label"]) for r in ref if r["split"] == "test_heldout"][: args.max_prompts]
        return torch.stack(load), [r["label"] for r in ref], gen, torch.stack(tr), [r["label"] for r in train]
    from sonodiff.data.layouts import scan

    items = sorted(scan(args.data, "fsdd").items, key=lambda it: it.key)
    test = [it for it in items if it.split == "test"]
    per: dict[str, list] = {}
    for it in items:
        if it.split == "train":
            per.setdefault(it.label, []).append(it)
    train = [it for v in per.values() for it in v[: args.per_class]]  # the generated rows' count per class
    ta = torch.stack([fix(load_audio(Path(args.data) / it.path, sample_rate=sr, channels="mono")[0][0]) for it in test])
    tr = torch.stack([fix(load_audio(Path(args.data) / it.path, sample_rate=sr, channels="mono")[0][0]) for it in train])
    labels = sorted({it.label for it in test})
    gen = [(lab, lab) for lab in labels for _ in range(args.per_class)]
    return ta, [it.label for it in test], gen, tr, [it.label for it in train]


def generate(model_dir: Path, prompts: list[str], seconds: float, batch: int, seed: int,
             sampling: dict | None = None, guide: Path | None = None) -> torch.Tensor:
    """Audio ``[N, T]`` for ``prompts`` at the model's default settings (seeds seed, seed+1, ...) with the
    ``sampling`` overrides (Pipeline keywords); ``guide``: an autoguidance model directory."""
    from sonodiff.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(model_dir)
    if guide is not None:
        pipe.set_guide(guide)
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        audio = pipe(chunk, duration_s=seconds, seeds=list(range(seed + i, seed + i + len(chunk))),
                     **(sampling or {}))
        out.append(audio.audio.reshape(len(chunk), -1).float())
    return torch.cat(out)


def resynthesis(model_dir: Path, audio: torch.Tensor) -> torch.Tensor:
    """Held-out audio through the model's codec and its decoder (what the feature space and vocoder cost)."""
    from sonodiff.pipelines import Pipeline
    from sonodiff.pipelines.decode import features_to_audio

    pipe = Pipeline.from_pretrained(model_dir)
    out = []
    for i in range(0, len(audio), 64):
        z = pipe.codec.encode(audio[i:i + 64, None])
        out.append(features_to_audio(pipe.codec, z, vocoder=pipe.vocoder).reshape(z.shape[0], -1)[:, : audio.shape[-1]].float())
    return torch.cat(out)


def cached_classifier(args, out: Path, ref_audio, ref_labels, sr: int, seconds: float, log):
    """The in-house classifier of this benchmark's held-out audio, trained once and kept in OUT/classifier (reused
    when the data, rate, length and step count are the same; delete the folder to retrain)."""
    import hashlib

    from safetensors.torch import load_file

    from sonodiff.eval.classifier import AudioClassifier, ClassifierConfig, train_classifier
    from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_json

    labels = tuple(sorted(set(ref_labels)))
    cfg = ClassifierConfig(labels=labels, sample_rate=sr, seconds=seconds)
    key = hashlib.sha256(json.dumps([str(Path(args.data or args.corpus).resolve()), args.domain if args.corpus else "",
                                     sr, seconds, args.classifier_steps, list(labels), len(ref_audio),
                                     float(ref_audio.double().sum())]).encode()).hexdigest()[:16]
    d = out / "classifier"
    if (d / "meta.json").is_file() and json.loads((d / "meta.json").read_text()).get("key") == key:
        clf = AudioClassifier(cfg)
        clf.load_state_dict(load_file(str(d / "model.safetensors")))
        log(f"classifier: reusing {d} (key {key})")
        return clf.eval()
    clf = train_classifier(ref_audio, ref_labels, cfg, steps=args.classifier_steps, log=log)
    atomic_save_tensors(d / "model.safetensors", {k: v.contiguous() for k, v in clf.state_dict().items()})
    atomic_write_json(d / "meta.json", {"key": key, "steps": args.classifier_steps, "labels": list(labels),
                                        "sample_rate": sr, "seconds": seconds})
    return clf.eval()


def plot(results: list[dict], calib: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for r in results:  # curves: the model's own guidance and training EMA (other rows are in the table)
        pts = [p for p in r["points"] if p.get("ema", "train") == "train" and p.get("sampling", "default") == "default"]
        x = [p["train_minutes"] for p in pts]
        axes[0].plot(x, [p["accuracy"] for p in pts], marker="o", label=r["name"])
        axes[1].plot(x, [p["frechet"] for p in pts], marker="o", label=r["name"])
    for name, c in calib.items():  # calibration rows: dashed lines labelled at the right edge
        for ax, key in ((axes[0], "accuracy"), (axes[1], "frechet")):
            ax.axhline(c[key], ls="--", lw=0.8, color="grey")
            ax.annotate(name, xy=(0.99, c[key]), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                        fontsize=7, color="grey")
    axes[0].set_ylabel("in-house classifier accuracy")
    axes[1].set_ylabel("Frechet distance (classifier embedding)")
    axes[1].set_yscale("log")
    for a in axes:
        a.set_xlabel("training wall minutes (2 CPU cores)")
        a.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", required=True, help="recipe name or TOML path")
    ap.add_argument("--variant", action="append", required=True, help="NAME:key=value,key=value (repeatable)")
    ap.add_argument("--data", help="dataset folder (sets data.root); FSDD for class-label models")
    ap.add_argument("--corpus", help="a built corpus folder (text-to-audio models; also sets data.root)")
    ap.add_argument("--domain", default="sfx", help="corpus domain to score (default sfx)")
    ap.add_argument("--out", default="runs/bench_learning", help="folder for the runs, exports and results")
    ap.add_argument("--steps", type=int, default=3000, help="optimizer steps per variant")
    ap.add_argument("--minutes", type=float, default=0, help="wall-clock budget per variant (0 = none)")
    ap.add_argument("--eval-every", type=int, default=500, help="steps between evaluation points")
    ap.add_argument("--per-class", type=int, default=20, help="generated clips per class (FSDD)")
    ap.add_argument("--max-prompts", type=int, default=200, help="held-out captions to generate (corpus)")
    ap.add_argument("--classifier-steps", type=int, default=800)
    ap.add_argument("--guidance", type=float, action="append",
                    help="score each point at this guidance scale too (repeatable; default: the model's own only)")
    ap.add_argument("--sampling", action="append", default=[],
                    help="NAME:key=value,... score each point at these sampling settings too (repeatable; keys: "
                         + ", ".join(sorted(SAMPLING_KEYS)) + ")")
    ap.add_argument("--ema-sigma-rel", type=float, action="append",
                    help="also score the post-hoc EMA reconstruction at this sigma_rel (runs with train.posthoc_ema)")
    ap.add_argument("--eval-only", action="store_true",
                    help="no training: score the checkpoints the variants' run folders already hold")
    ap.add_argument("--last-only", action="store_true", help="score only each variant's last checkpoint")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="results JSON (default OUT/results.json)")
    ap.add_argument("--png", help="curves PNG (default OUT/curves.png)")
    args = ap.parse_args()
    if bool(args.data) == bool(args.corpus):
        raise SystemExit("give exactly one of --data (FSDD) or --corpus")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    variants = [parse_variant(v) for v in args.variant]
    samplings = [("default", {})] + [(f"cfg{g:g}", {"guidance_scale": g}) for g in (args.guidance or [])]
    samplings += [parse_sampling(sp) for sp in args.sampling]
    root_set = f"data.root={Path(args.data or args.corpus).resolve()}"

    from sonodiff.eval.classifier import evaluate_audio
    from sonodiff.training.export import export_run

    results, classifier, calib, scored_at = [], None, {}, None
    for name, sets in variants:
        run_dir = out / name
        if args.eval_only:
            prev = out / "results.json"
            old = {r["name"]: r for r in json.loads(prev.read_text())["variants"]} if prev.is_file() else {}
            info = {k: old.get(name, {}).get(k) for k in ("wall_s", "stopped")}
        else:
            info = train_variant(args.recipe, [root_set, *sets], run_dir, args.steps, args.eval_every, args.minutes,
                                 args.threads, log)
        ckpts = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if (p / "meta.json").is_file())
        if args.last_only:
            ckpts = ckpts[-1:]
        points = []
        evals = [(ck, None) for ck in ckpts]
        if args.ema_sigma_rel and ckpts:  # post-hoc EMA reconstructions of the last checkpoint
            evals += [(ckpts[-1], s) for s in args.ema_sigma_rel]
        for ck, sigma_rel in evals:
            meta = json.loads((ck / "meta.json").read_text())
            tag = f"{name}-{ck.name}" + (f"-ema{sigma_rel:g}" if sigma_rel is not None else "")
            exp = export_run(run_dir, out / "exports" / tag, checkpoint=ck.name, ema_sigma_rel=sigma_rel)
            cfg = json.loads((exp / "config.json").read_text())
            sr, seconds = cfg["audio"]["sample_rate"], cfg["audio"]["seconds"]
            if classifier is not None and (sr, seconds) != scored_at:
                raise SystemExit(f"variant {name} generates {seconds} s at {sr} Hz but the classifier scores "
                                 f"{scored_at[1]} s at {scored_at[0]} Hz: compare variants of one rate and length")
            if classifier is None:  # one classifier for every variant and point (same rate and length)
                scored_at = (sr, seconds)
                ref_audio, ref_labels, gen_spec, train_audio, train_labels = held_out(args, sr, seconds)
                classifier = cached_classifier(args, out, ref_audio, ref_labels, sr, seconds, log)
                ref_emb = torch.cat([classifier.embed(ref_audio[i:i + 256]).detach()
                                     for i in range(0, len(ref_audio), 256)])
                calib["real train"] = {**evaluate_audio(classifier, train_audio, train_labels, ref_emb),
                                       **levels(train_audio)}
            if f"resynthesis unpaired ({name})" not in calib:
                rs = resynthesis(exp, train_audio)
                calib[f"resynthesis unpaired ({name})"] = {
                    **evaluate_audio(classifier, rs, train_labels, ref_emb), **levels(rs)}
                rs = resynthesis(exp, ref_audio)
                calib[f"resynthesis paired ({name})"] = {
                    **evaluate_audio(classifier, rs, ref_labels, ref_emb), **levels(rs)}
            model_sampling = json.loads((exp / "config.json").read_text())["sampling"]
            for sname, sp in samplings:
                if sigma_rel is not None and sname != "default":
                    continue  # post-hoc EMA rows at the model's own settings only
                sp = dict(sp)
                guide = sp.pop("autoguide", None)
                if guide is not None and not Path(guide).is_dir():  # a checkpoint of this run: export it
                    gck = run_dir / "checkpoints" / guide
                    if not (gck / "meta.json").is_file():
                        raise SystemExit(f"--sampling {sname}: autoguide {guide!r} is neither a model directory "
                                         f"nor a checkpoint in {run_dir / 'checkpoints'}")
                    guide = export_run(run_dir, out / "exports" / f"{name}-{guide}", checkpoint=guide)
                t0 = time.time()
                audio = generate(exp, [p for p, _ in gen_spec], seconds, 32, seed=0, sampling=sp,
                                 guide=None if guide is None else Path(guide))
                res = {**evaluate_audio(classifier, audio, [lab for _, lab in gen_spec], ref_emb), **levels(audio)}
                g = sp.get("guidance_scale", model_sampling["guidance_scale"])
                gi = sp.get("guidance_interval", model_sampling.get("guidance_interval"))
                how = (f"auto {Path(guide).name} w={g:g}" if guide is not None else f"cfg {g:g}") + \
                    (f" in ({gi[0]:g}, {gi[1]:g}]" if gi else "") + \
                    (f" rescale {sp['cfg_rescale']:g}" if sp.get("cfg_rescale") else "") + \
                    (f" {sp['sampler']}" if "sampler" in sp else "") + \
                    (f" {sp['num_steps']} steps" if "num_steps" in sp else "")
                points.append({"step": meta["step"], "samples": meta.get("samples"),
                               "train_minutes": round(meta.get("train_seconds", float("nan")) / 60, 2),
                               "sampling": sname, "guidance": how, "ema": "posthoc %g" % sigma_rel
                               if sigma_rel is not None else "train",
                               "gen_seconds": round(time.time() - t0, 1), **res})
                log(f"{name} {ck.name} {sname} ({how}) EMA {points[-1]['ema']}: accuracy "
                    f"{res['accuracy']:.3f} frechet {res['frechet']:.2f} peak median/max "
                    f"{res['peak_db_median']:.1f}/{res['peak_db_max']:.1f} dBFS ({points[-1]['train_minutes']} "
                    f"min, {meta.get('samples')} examples)")
            write_results(args, out, [*results, {"name": name, "sets": sets, **info, "points": points}], calib,
                          final=False)  # after every point: a stopped run keeps what it measured
        results.append({"name": name, "sets": sets, **info, "points": points})
    write_results(args, out, results, calib, final=True)


def write_results(args, out: Path, results: list[dict], calib: dict, final: bool) -> None:
    """The Markdown table (printed when ``final``), the JSON and the PNG of everything measured so far."""
    from sonodiff.utils.atomic import atomic_write_json

    def lv(p):
        return (f"{p['peak_db_median']:.1f} / {p['peak_db_max']:.1f} | {p['clipped']:.1%}" if "peak_db_max" in p
                else "- | -")

    lines = ["| variant | step | examples | train min | guidance | EMA | n | accuracy | Frechet | peak dBFS median / max "
             "| clipped |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for p in r["points"]:
            lines.append(f"| {r['name']} | {p['step']} | {p['samples']} | {p['train_minutes']} | "
                         f"{p.get('guidance', '')} | {p.get('ema', 'train')} | {p['n']} | "
                         f"{p['accuracy']:.3f} ± {p.get('accuracy_stderr', float('nan')):.3f} | {p['frechet']:.2f} | "
                         f"{lv(p)} |")
    for cname, c in calib.items():
        lines.append(f"| calibration: {cname} | | | | | | {c['n']} | {c['accuracy']:.3f} | {c['frechet']:.2f} | "
                     f"{lv(c)} |")
    table = "\n".join(lines)
    js = Path(args.json) if args.json else out / "results.json"
    png = Path(args.png) if args.png else out / "curves.png"
    atomic_write_json(js, {"recipe": args.recipe, "argv": sys.argv[1:], "complete": final, "variants": results,
                           "calibration": calib, "table": table}, indent=1)
    plot(results, calib, png)
    if final:
        print(table)
        print(f"wrote {js} and {png}")


if __name__ == "__main__":
    main()
