"""An autoencoder (the ``latent`` codec) against its own mel codec on held-out real clips: what the learned
compression costs, beside what the vocoder alone costs, in one run.

Clips: the ``test`` + ``test_heldout`` clips of a built corpus (``--domains``; no autoencoder or diffusion model
trains on them), at the autoencoder's sample rate, cut to ``--seconds``. Rows:

- calibration: the real clips (distance 0 by construction) and white noise at each clip's RMS (the floor);
- ``mel codec + Griffin-Lim``: the vocoder-only row (the mel the autoencoder was trained on, voiced as shipped);
- ``autoencoder + Griffin-Lim`` for each ``--autoencoder``: analyse, encode to the latent, decode, voice.

Metrics: the multi-resolution log-mel distance of the audio (``sonodiff.eval.metrics.mel_distance``, against the
real clip), and in the codec's own log-mel: the L1 of the reconstructed features against the analysed ones (what
the autoencoder itself loses, before any vocoder) next to the L1 of predicting every frame by the data mean.
Speed: encode + decode seconds per second of audio on this CPU (batch 1). Prints a Markdown table, writes JSON.

    python scripts/bench_autoencoder.py --corpus runs/corpus_sfx --domains sfx --autoencoder runs/ae_sfx_export \\
        --out runs/bench_ae
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def held_out(corpus: Path, domains: set[str], limit: int) -> list[dict]:
    rows = [json.loads(line) for line in (corpus / "metadata.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("split") in ("test", "test_heldout") and r.get("domain") in domains]
    rows.sort(key=lambda r: r["id"])
    return rows[:limit] if limit else rows


def main() -> int:
    from sonodiff.audio.codecs import make_codec
    from sonodiff.audio.io import load_audio
    from sonodiff.eval.metrics import mel_distance
    from sonodiff.models.vocoders import load_vocoder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--domains", default="sfx")
    ap.add_argument("--autoencoder", action="append", required=True, help="a shipped name or a directory; repeatable")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_ae"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codecs = {spec: make_codec("latent", autoencoder=spec) for spec in args.autoencoder}
    mel = next(iter(codecs.values())).mel
    if any(c.mel.config != mel.config for c in codecs.values()):
        raise SystemExit("every --autoencoder must share one mel codec (the same rows of real audio)")
    sr = mel.sample_rate
    voc = load_vocoder("griffin_lim", expect=mel.config)
    clips = held_out(args.corpus, set(args.domains.split(",")), args.limit)
    if not clips:
        raise SystemExit(f"no test/test_heldout clips of domains {args.domains} in {args.corpus}")
    n = int(round(args.seconds * sr))
    real = []
    for r in clips:
        a = load_audio(args.corpus / r["path"], sample_rate=sr, channels="mono")[0][:, :n]
        real.append(torch.nn.functional.pad(a, (0, n - a.shape[-1])))
    g = torch.Generator().manual_seed(0)
    rows: dict[str, dict] = {}

    def score(name: str, audio: list[torch.Tensor], feats_l1: float | None = None, rtf: float | None = None) -> None:
        d = [mel_distance(y[0], x[0], sr) for y, x in zip(audio, real)]
        rows[name] = {"n": len(d), "mel_distance": sum(d) / len(d), "feature_l1": feats_l1, "codec_s_per_s": rtf}

    score("calibration: the real clips", real)
    score("calibration: white noise at each clip's RMS",
          [torch.randn(x.shape, generator=g) * x.pow(2).mean().sqrt() for x in real])
    with torch.no_grad():
        truth = [mel.analyze(x[None]) for x in real]
        all_f = torch.cat([t.flatten(2) for t in truth], dim=-1)
        mean = all_f.mean(dim=-1, keepdim=True)
        mean_l1 = sum(float((t - mean[..., None]).abs().mean()) for t in truth) / len(truth)
        score("mel codec + Griffin-Lim (vocoder only)", [voc(t, length=n)[0] for t in truth], 0.0)
        rows["mel codec + Griffin-Lim (vocoder only)"]["mean_predictor_l1"] = mean_l1
        for spec, codec in codecs.items():
            # the latent's normalisation cancels in decode(normalize(.)); fit it here so the codec API is used as is
            codec.fit([codec.analyze(x[None])[0] for x in real])
            out, l1s, secs = [], [], 0.0
            for x, t in zip(real, truth):
                t0 = time.perf_counter()
                rec = codec.decode(codec.normalize(codec.analyze(x[None])))
                secs += time.perf_counter() - t0
                rec = rec[..., : t.shape[-1]]
                l1s.append(float((rec - t).abs().mean()))
                out.append(voc(rec, length=n)[0])
            score(f"autoencoder {Path(spec).name} + Griffin-Lim", out, sum(l1s) / len(l1s), secs / (len(real) * args.seconds))
    lines = ["| rows | n | mel distance (audio) | log-mel L1 (codec features) | encode + decode s per s of audio |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        f = "" if r["feature_l1"] is None else f"{r['feature_l1']:.3f}"
        t = "" if r["codec_s_per_s"] is None else f"{r['codec_s_per_s']:.4f}"
        lines.append(f"| {name} | {r['n']} | {r['mel_distance']:.3f} | {f} | {t} |")
    lines.append(f"\nlog-mel L1 of predicting every frame by the clips' mean: {mean_l1:.3f}")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_autoencoder.json").write_text(json.dumps({
        "corpus": args.corpus.name, "domains": args.domains, "seconds": args.seconds, "clips": len(real),
        "autoencoders": args.autoencoder, "mean_predictor_l1": mean_l1, "rows": rows}, indent=1))
    (args.out / "bench_autoencoder.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
