"""`sonodiff generate | inpaint | continue | vary | models`: the command line over :class:`Pipeline`.

Audio models write ``.wav`` / ``.flac`` clips; image models write ``.png`` images (and, for ``-n`` > 1, a grid of
them at ``--out``). Every output has its JSON sidecar (prompt, seed, every sampling setting, the model)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

__all__ = ["add_parser"]


def _slug(text: str | None) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", text or "uncond").strip("_")[:48] or "x"


def _pipe(args):
    import torch

    from sonodiff.models import default_model
    from sonodiff.pipelines import Pipeline

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise ValueError(f"--device {args.device!r} is not a device: use cpu, cuda or cuda:N ({e})") from None
    if device.type == "cpu":
        from sonodiff.utils.malloc import keep_freed_memory

        keep_freed_memory()  # this process only generates: reuse freed pages instead of faulting them in anew
    guide = getattr(args, "guide", None)
    return Pipeline.from_pretrained(args.model or default_model(), device=device, dtype=dtype,
                                    guide="model" if guide is None else None if guide == "none" else guide,
                                    vocoder=getattr(args, "vocoder", None) or "model")


def _provenance(pipe, args, prompt, seed, **extra) -> dict:
    # the model as the user named it (a shipped name, or the path as given), never this machine's path
    return pipe.provenance(prompt, seed, model=str(args.model) if args.model else None,
                           **{"negative_prompt": None, **_sampling_kwargs(args)}, **extra)


def write_clip(path: Path, audio, sr: int, sidecar: dict, spectrogram: bool, features=None) -> dict:
    """Write a generated clip and its sidecar (and a spectrogram PNG next to it) atomically; returns the sidecar
    as written (with ``scaled_from_peak`` when the clip had to be scaled down). The CLI and the demo write this way."""
    from sonodiff.audio.io import save_audio, scale_down_peak

    path.parent.mkdir(parents=True, exist_ok=True)
    audio, peak = scale_down_peak(audio)  # generated audio can overshoot: scaled down, and the sidecar says so
    if peak is not None:
        sidecar = {**sidecar, "scaled_from_peak": peak}
    save_audio(path, audio, sr, sidecar=sidecar)
    if spectrogram:
        save_spectrogram(path.with_suffix(".png"), audio, sr, title=str(sidecar.get("prompt") or ""))
    return sidecar


def write_image(path: Path, image, sidecar: dict) -> dict:
    """Write a generated image (uint8 ``[C, H, W]``) as PNG and its sidecar ``<stem>.json``, atomically."""
    from sonodiff.audio.image_io import save_png
    from sonodiff.utils.atomic import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, image)
    atomic_write_json(path.with_suffix(".json"), sidecar, indent=1, sort_keys=True)
    return sidecar


def _write_output(pipe, path: Path, gen, k: int, sidecar: dict, spectrogram: bool) -> None:
    if pipe.modality == "image":
        write_image(path, gen.images[k], sidecar)
    else:
        write_clip(path, gen.audio[k], gen.sample_rate, sidecar, spectrogram)


def save_spectrogram(path: Path, audio, sr: int, title: str = "") -> None:
    """A PNG of the power spectrogram (dB, 100 dB range) of the first channel of ``audio [C, T]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from sonodiff.utils.atomic import atomic_path

    x = audio[0].double()
    n_fft = 512 if len(x) >= 512 else max(16, 1 << (len(x).bit_length() - 1))
    S = torch.stft(x, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft, dtype=x.dtype),
                   return_complex=True, center=True).abs().pow(2)
    db = 10 * torch.log10(S.clamp_min(1e-12))  # exact digital silence is drawn at the floor, not left blank
    db = db.clamp_min(db.max() - 100.0).numpy()
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, len(x) / sr, 0, sr / 2))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title[:60], fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


SUFFIXES = {"audio": (".wav", ".flac"), "image": (".png",)}


def _check_suffix(pipe, path: Path, flag: str) -> None:
    ok = SUFFIXES[pipe.modality]
    if path.suffix.lower() not in ok:
        raise ValueError(f"{flag} must end in {' or '.join(ok)} for an {pipe.modality} model, got {path}")


def _outputs(out: Path, n: int, pipe) -> list[Path]:
    _check_suffix(pipe, out, "--out")
    return [out] if n == 1 else [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in range(n)]


def _out(args, pipe) -> Path:
    """``--out``, or the command's default name with the model's file type (out.wav, or out.png for images)."""
    return Path(args.out) if args.out else Path(f"{args.out_stem}{SUFFIXES[pipe.modality][0]}")


def _check_modality_flags(pipe, args) -> None:
    """Flags that only mean something for audio models are errors for image models (never silently ignored)."""
    if pipe.modality != "image":
        return
    for flag, given in (("--spectrogram", getattr(args, "spectrogram", False)),
                        ("--duration", getattr(args, "duration", None) is not None),
                        ("--stream", getattr(args, "stream", False)),
                        ("--vocoder", getattr(args, "vocoder", None) is not None),
                        ("--clap-guidance", bool(getattr(args, "clap_guidance", 0.0)))):
        if given:
            raise ValueError(f"{flag} is for audio models; {args.model or 'this model'} is an image model "
                             f"({'x'.join(map(str, pipe.image_size))} images)")


def _options(items: list[str] | None, flag: str) -> dict:
    """``["eta=0.5", "predictor_options.eta=1"]`` -> ``{"eta": 0.5, "predictor_options": {"eta": 1}}``; values are
    TOML (numbers, true/false, "strings", {inline = tables}), a bare word is a string."""
    from sonodiff.utils.config import ConfigError, parse_override

    out: dict = {}
    for item in items or []:
        try:
            keys, value = parse_override(item)
        except ConfigError as e:
            raise ValueError(f"{flag} {item!r}: must look like KEY=VALUE (e.g. {flag} eta=0.5) ({e})") from None
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"{flag} {item!r}: {k} was already given a value")
        node[keys[-1]] = value
    return out


def _sampling_kwargs(args) -> dict:
    kw = {"num_steps": args.steps, "sampler": args.sampler, "guidance_scale": args.cfg, "schedule": args.schedule,
          "sampler_options": _options(args.sampler_opt, "--sampler-opt"),
          "schedule_options": _options(args.schedule_opt, "--schedule-opt"), "cfg_rescale": args.cfg_rescale}
    if args.cfg_interval is not None:
        kw["guidance_interval"] = None if args.cfg_interval == ["all"] else _interval(args.cfg_interval)
    if getattr(args, "negative", None):
        kw["negative_prompt"] = args.negative
    return kw


def _interval(vals: list[str]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in vals)
    except ValueError:
        raise ValueError(f"--cfg-interval takes two noise levels LO HI (or 'all'), got {' '.join(vals)!r}") from None
    return lo, hi


# --------------------------------------------------------------------------------------- generate
def _generate(args) -> int:
    from tqdm import tqdm

    pipe = _pipe(args)
    _check_modality_flags(pipe, args)
    fmt = args.format or SUFFIXES[pipe.modality][0]
    meta: dict = {}  # output path -> extra sidecar fields (a protocol's clip id and fields)
    if args.protocol:
        from sonodiff.eval.evaluate import load_protocol

        if args.prompts or args.prompt is not None:
            raise ValueError("--protocol gives the prompts (one clip per listed caption): no prompt or --prompts")
        proto = load_protocol(args.protocol)
        out_dir = Path(args.out_dir or "outputs")
        jobs, field = [], "label" if pipe.labels is not None else "caption"
        for i, (cid, c) in enumerate(proto["clips"].items()):
            if not c.get(field):
                raise ValueError(f"--protocol {args.protocol}: clip {cid!r} has no {field!r} to prompt this model with")
            path = out_dir / f"{cid}{fmt}"
            jobs.append((str(c[field]), args.seed + i, path))
            meta[path] = {"id": cid, "protocol": proto["name"],
                          **{k: v for k, v in c.items() if k in ("caption", "label", "transcript", "speaker", "note")}}
    elif args.prompts:
        lines = [ln.strip() for ln in Path(args.prompts).read_text().splitlines()]
        prompts = [ln for ln in lines if ln and not ln.startswith("#")]
        if not prompts:
            raise ValueError(f"{args.prompts} has no prompts (one per line; '#' starts a comment)")
        out_dir = Path(args.out_dir or "outputs")
        _check_suffix(pipe, Path("x" + fmt), "--format")
        jobs = [(p, args.seed + i * args.n + j, out_dir / f"{i:04d}_{_slug(p)}_{j}{fmt}")
                for i, p in enumerate(prompts) for j in range(args.n)]
    else:
        outs = _outputs(_out(args, pipe), args.n, pipe)
        jobs = [(args.prompt, args.seed + j, outs[j]) for j in range(args.n)]
    todo = [j for j in jobs if not (j[2].exists() and j[2].with_suffix(".json").exists())]
    if len(todo) < len(jobs):
        print(f"{len(jobs) - len(todo)} output(s) already written, skipped (delete them to regenerate)")
    bar = tqdm(total=len(todo), desc="generate", unit="file", disable=len(todo) <= 1)
    clap = None
    if args.best_of > 1 or args.clap_guidance:
        from sonodiff.eval.clap import clap_scorer, load_clap

        if args.stream:
            raise ValueError("--best-of and --clap-guidance do not apply to --stream")
        if any(p is None for p, _, _ in todo):
            raise ValueError("--best-of and --clap-guidance rank or guide by the text prompt: give one")
        if pipe.modality == "image":  # image models are ranked by the in-house CLIP (--clip)
            clap = load_clap(args.clip)
            if getattr(clap, "modality", "audio") != "image":
                raise ValueError(f"--clip {args.clip}: a text-audio CLAP; image models are ranked by a text-image CLIP")
        else:
            clap = load_clap(args.clap)
    if args.best_of < 1:
        raise ValueError(f"--best-of must be >= 1, got {args.best_of}")
    extra = {"clap_guidance": (clap, args.clap_guidance)} if args.clap_guidance else {}
    if args.best_of > 1:
        for prompt, seed, path in todo:
            # candidates use seeds seed*best_of .. seed*best_of+best_of-1: each output's set is its own
            if pipe.modality == "image":
                from sonodiff.eval.clap import clip_image_scorer

                gen = pipe.best_of([prompt], clip_image_scorer(clap), num_candidates=args.best_of,
                                   seed=seed * args.best_of, **_sampling_kwargs(args))
                ranked = {"clip": args.clip}
            else:
                gen = pipe.best_of([prompt], clap_scorer(clap), num_candidates=args.best_of, seed=seed * args.best_of,
                                   duration_s=args.duration, **_sampling_kwargs(args), **extra)
                ranked = {"clap": args.clap, "duration_s": args.duration}
            _write_output(pipe, path, gen, 0,
                   _provenance(pipe, args, prompt, gen.seeds[0], best_of=args.best_of,
                               **ranked, **({"clap_guidance": args.clap_guidance} if extra else {}),
                               **({"label": prompt} if pipe.labels is not None else {}), **meta.get(path, {})),
                   args.spectrogram)
            print(f"wrote {path}")
            bar.update(1)
        bar.close()
        return 0
    for k in range(0, len(todo), args.batch):
        chunk = todo[k:k + args.batch]
        if args.stream:
            for prompt, seed, path in chunk:
                _stream_one(pipe, args, prompt, seed, path)
                bar.update(1)
            continue
        gen = pipe([p for p, _, _ in chunk] if chunk[0][0] is not None else None,
                   num_per_prompt=1 if chunk[0][0] is not None else len(chunk),
                   seeds=[s for _, s, _ in chunk], duration_s=args.duration, **_sampling_kwargs(args), **extra)
        for i, (prompt, seed, path) in enumerate(chunk):
            more = {"clap": args.clap, "clap_guidance": args.clap_guidance} if extra else {}
            if pipe.labels is not None:
                more["label"] = prompt
            if pipe.modality == "audio":
                more["duration_s"] = args.duration
            more.update(meta.get(path, {}))
            _write_output(pipe, path, gen, i, _provenance(pipe, args, prompt, seed, **more), args.spectrogram)
            print(f"wrote {path}")
        bar.update(len(chunk))
    bar.close()
    if pipe.modality == "image" and not args.prompts and not args.protocol and args.n > 1:
        _write_grid(pipe, args, jobs)
    return 0


def _write_grid(pipe, args, jobs) -> None:
    """``-n`` > 1 images: also one grid of all of them at ``--out`` (its sidecar lists each tile's file and seed)."""
    import torch

    from sonodiff.audio.image_io import image_grid, read_image

    images = torch.stack([read_image(p, pipe.image_size[0]) for _, _, p in jobs])
    grid = _out(args, pipe)
    columns = math.ceil(math.sqrt(len(jobs)))
    tiles = [{"file": p.name, "seed": s} for _, s, p in jobs]
    write_image(grid, image_grid(images, columns=columns),
                {**_provenance(pipe, args, args.prompt, jobs[0][1]), "grid": tiles, "columns": columns})
    print(f"wrote {grid} (grid of {len(jobs)})")


def _stream_one(pipe, args, prompt, seed, path: Path) -> None:
    import torch

    from sonodiff.audio.io import save_audio

    if not args.duration:
        raise ValueError("--stream needs --duration (long-form length in seconds)")
    pieces = []
    for i, chunk in enumerate(pipe.stream([prompt] if prompt is not None else None, duration_s=args.duration,
                                          seeds=[seed], **_sampling_kwargs(args))):
        pieces.append(chunk[0])
        part = path.with_name(f"{path.stem}.part{i:03d}{path.suffix}")
        save_audio(part, chunk[0].clamp(-1, 1), pipe.sample_rate)
        print(f"chunk {i}: {part} ({chunk.shape[-1] / pipe.sample_rate:.2f} s)", flush=True)
    write_clip(path, torch.cat(pieces, dim=-1), pipe.sample_rate,
           _provenance(pipe, args, prompt, seed, duration_s=args.duration, streamed=True), args.spectrogram)
    for part in path.parent.glob(f"{path.stem}.part*{path.suffix}"):
        part.unlink()
    print(f"wrote {path}")


# --------------------------------------------------------------------------------------- editing
def _load_input(path: str):
    from sonodiff.audio.io import load_audio

    return load_audio(path)


def _extend(text: str) -> tuple[int, int, int, int]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4 or any(v < 0 for v in vals):
        raise ValueError(f"--extend takes four pixel counts LEFT,RIGHT,TOP,BOTTOM >= 0 (e.g. 0,0,8,0), got {text!r}")
    return vals  # type: ignore[return-value]


def _edit_image(pipe, args) -> int:
    """inpaint (--mask, or --extend: outpainting) and vary of an image model; nothing is written on an error."""
    from sonodiff.audio.image_io import read_image

    C, H, W = pipe.image_size
    if args.command == "continue":
        raise ValueError("continue extends audio past its end; for an image model use "
                         "`sonodiff inpaint IMG --extend LEFT,RIGHT,TOP,BOTTOM` (outpainting)")
    if getattr(args, "spectrogram", False) or getattr(args, "vocoder", None):
        raise ValueError(f"{'--spectrogram' if args.spectrogram else '--vocoder'} is for audio models; this is an image "
                         "model")
    out = _outputs(_out(args, pipe), 1, pipe)[0]
    prompts = [args.prompt] if args.prompt is not None else None
    kw = _sampling_kwargs(args)
    if args.command == "inpaint":
        if args.start is not None or args.end is not None:
            raise ValueError("--start/--end select a time span of audio; for an image model give --mask MASK.png "
                             "(white = regenerate) or --extend LEFT,RIGHT,TOP,BOTTOM")
        if (args.mask is None) == (args.extend is None):
            raise ValueError("inpainting an image needs exactly one of --mask MASK.png (white = regenerate) or "
                             "--extend LEFT,RIGHT,TOP,BOTTOM (outpainting)")
        if args.extend is not None:
            ext = _extend(args.extend)
            if args.resize:
                raise ValueError("--resize does not apply to --extend: the extended image must be the model's size")
            image = read_image(args.input, C)
            gen = pipe.outpaint_image(image, ext, prompts, seeds=[args.seed], method=args.method, **kw)
            extra = {"task": "outpaint", "extend": list(ext), "method": args.method}
        else:
            image = read_image(args.input, C, (H, W), resize=args.resize)
            m = read_image(args.mask, 1)
            if tuple(m.shape[1:]) != tuple(image.shape[1:]):
                raise ValueError(f"mask {args.mask} is {m.shape[1]}x{m.shape[2]} but the image "
                                 f"{'(resized) ' if args.resize else ''}is {image.shape[1]}x{image.shape[2]}: "
                                 "give a mask of the image's size (white = regenerate)")
            mask = m[0] > 127
            gen = pipe.inpaint_image(image, mask, prompts, seeds=[args.seed], method=args.method, **kw)
            extra = {"task": "inpaint", "mask": args.mask, "masked_pixels": int(mask.sum()), "method": args.method}
    else:
        image = read_image(args.input, C, (H, W), resize=args.resize)
        gen = pipe.vary_image(image, args.strength, prompts, seeds=[args.seed], **kw)
        extra = {"task": "vary", "strength": args.strength}
    if args.resize:
        extra["resized_to"] = [H, W]
    write_image(out, gen.images[0], _provenance(pipe, args, args.prompt, args.seed, input=args.input, **extra))
    print(f"wrote {out}")
    return 0


def _edit(args) -> int:
    from sonodiff.audio.image_io import IMAGE_EXTENSIONS

    pipe = _pipe(args)
    if pipe.modality == "image":
        return _edit_image(pipe, args)
    if Path(args.input).suffix.lower() in IMAGE_EXTENSIONS:
        raise ValueError(f"{args.input} is an image; {args.model or 'this model'} is an audio model (it takes "
                         f"{', '.join(SUFFIXES['audio'])} audio at {pipe.sample_rate} Hz)")
    for flag, given in (("--mask", getattr(args, "mask", None)), ("--extend", getattr(args, "extend", None)),
                        ("--resize", getattr(args, "resize", False))):
        if given:
            raise ValueError(f"{flag} is for image models; this is an audio model")
    if args.command == "inpaint" and (args.start is None or args.end is None):
        raise ValueError("inpainting audio needs --start and --end (seconds)")
    audio, sr = _load_input(args.input)
    prompts = [args.prompt] if args.prompt is not None else None
    kw = _sampling_kwargs(args)
    if args.command == "inpaint":
        gen = pipe.inpaint(audio, sr, args.start, args.end, prompts, seeds=[args.seed], method=args.method, **kw)
        extra = {"task": "inpaint", "start_s": args.start, "end_s": args.end, "method": args.method}
    elif args.command == "continue":
        gen = pipe.continue_audio(audio, sr, args.duration, prompts, seeds=[args.seed], **kw)
        extra = {"task": "continue", "duration_s": args.duration}
    else:
        gen = pipe.vary(audio, sr, args.strength, prompts, seeds=[args.seed], **kw)
        extra = {"task": "vary", "strength": args.strength}
    out = _outputs(_out(args, pipe), 1, pipe)[0]
    write_clip(out, gen.audio[0], gen.sample_rate, _provenance(pipe, args, args.prompt, args.seed, input=args.input, **extra),
           args.spectrogram)
    print(f"wrote {out}")
    return 0


def _models(args) -> int:
    from sonodiff.models import list_models

    models = list_models(None)
    if not models:
        print("no shipped models")
    for name, m in models.items():
        if m["kind"] == "vocoder":
            print(f"{name:20s} {'vocoder':12s} {m['sample_rate']} Hz, {m['n_mels']} mel bins ({m['vocoder']}), trained "
                  f"{m['steps_trained']} steps")
            continue
        if m["kind"] == "autoencoder":
            print(f"{name:20s} {'autoencoder':12s} mel VAE, {m['latent_channels']} latent channels, {m['factor']}x down "
                  f"per axis, trained {m['steps_trained']} steps")
            continue
        if m["kind"] == "clap":
            what = (f"{'x'.join(map(str, m['image_size']))} images, {m['embed_dim']}-d text-image space"
                    if m["modality"] == "image" else f"{m['sample_rate']} Hz, {m['embed_dim']}-d text-audio space")
            print(f"{name:20s} {'clap':12s} {what}, trained {m['steps_trained']} steps")
            continue
        labels = f" labels={','.join(m['labels'])}" if m["labels"] else ""
        what = (f"{'x'.join(map(str, m['image_size']))} images" if m.get("modality") == "image"
                else f"{m['sample_rate']} Hz, {m['seconds']} s")
        print(f"{name:20s} {m['conditioning']:12s} {what}, trained {m['steps_trained']} steps{labels}")
    if args.json:
        print(json.dumps(models, indent=2))
    return 0


def _common(p, out_default: str | None) -> None:
    p.add_argument("--model", help="a shipped model name (see `sonodiff models`) or an exported model directory")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's, usually 25)")
    p.add_argument("--sampler", help="sampler name (default: the model's, usually dpmpp_2m); see `sonodiff samplers`")
    p.add_argument("--sampler-opt", action="append", metavar="KEY=VALUE",
                   help="a keyword option of the sampler, repeatable: e.g. eta=0.5 (ddim, euler_ancestral, SDE solvers), "
                        "s_churn=40 (heun), snr=0.1 or predictor=heun (langevin_pc); `sonodiff samplers` lists them")
    p.add_argument("--schedule", help="sigma grid (default: the model's, usually karras): karras, exponential, logsnr, "
                                      "linspace, leading, trailing (VP spacings) or flow")
    p.add_argument("--schedule-opt", action="append", metavar="KEY=VALUE",
                   help="an option of the grid, repeatable: e.g. rho=5 (karras), shift=3 (flow), "
                        "beta_schedule=cosine (linspace/leading/trailing), sigma_max=40")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--cfg-rescale", type=float, metavar="PHI",
                   help="guidance rescale phi in [0, 1] (Lin et al. 2024; default: the model's, usually 0 = off)")
    p.add_argument("--cfg-interval", nargs="+", metavar="LO HI",
                   help="guide only at noise levels LO < sigma <= HI (faster: the unconditional branch is skipped "
                        "elsewhere); 'all' guides every step (default: the model's setting)")
    p.add_argument("--negative", help="negative prompt (replaces the unconditional branch of guidance)")
    p.add_argument("--guide", metavar="NAME|DIR|none",
                   help="autoguidance (Karras et al. 2024): guide with this weaker model of the same task instead of "
                        "the unconditional branch ('none': classifier-free guidance; default: the model's own setting)")
    p.add_argument("--vocoder", metavar="NAME|DIR",
                   help="mel models: griffin_lim, a shipped vocoder or a vocoder directory (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first output; output k uses seed+k")
    p.add_argument("--spectrogram", action="store_true", help="also write a PNG spectrogram next to each output")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    if out_default is not None:
        p.add_argument("--out", help=f"output .wav or .flac, or .png for an image model (default {out_default}.wav, "
                                     f"or {out_default}.png)")
        p.set_defaults(out_stem=out_default)


def _guard(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return run


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate audio or images from a prompt (text or class label) or "
                                        "unconditionally")
    p.add_argument("prompt", nargs="?", help='e.g. "a dog barking" (omit for an unconditional model)')
    p.add_argument("--best-of", type=int, default=1, metavar="N",
                   help="generate N candidates per output and keep the one the CLAP (--clap) matches best to the prompt")
    p.add_argument("--clap-guidance", type=float, default=0.0, metavar="SCALE",
                   help="also guide sampling by the gradient of the in-house CLAP similarity to the prompt")
    p.add_argument("--clap", default="clap_corpus", help="CLAP name or directory for --best-of / --clap-guidance")
    p.add_argument("--clip", default="clip_mnist",
                   help="image models: the in-house CLIP (name or directory) that --best-of ranks candidates with")
    p.add_argument("-n", type=int, default=1, help="outputs per prompt")
    p.add_argument("--duration", type=float, help="seconds (default: the model's training length; longer = long-form)")
    p.add_argument("--prompts", help="a text file of prompts, one per line (batch; resumable: finished files are skipped)")
    p.add_argument("--protocol", metavar="MANIFEST",
                   help="an evaluation protocol (sonodiff evaluate --protocol): one output per listed clip, prompted "
                        "by its caption (its label for a class-conditional model), named by its id in --out-dir")
    p.add_argument("--out-dir", help="output folder for --prompts (default outputs/)")
    p.add_argument("--format", choices=[".wav", ".flac", ".png"],
                   help="file type for --prompts / --protocol outputs (default .wav; .png for an image model)")
    p.add_argument("--batch", type=int, default=8, help="outputs sampled together")
    p.add_argument("--stream", action="store_true", help="long-form: write each finished chunk as it is ready")
    _common(p, "out")
    p.set_defaults(func=_guard(_generate))

    for name, help_ in (("inpaint", "regenerate a time span of an audio file, or a masked region of an image "
                                    "(--mask), or extend an image (--extend: outpainting)"),
                        ("continue", "continue an audio file past its end"),
                        ("vary", "make a variation of an audio file or an image (SDEdit)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("input", help="input audio file (at the model's sample rate) or image (PNG/JPEG, the model's "
                                     "size)")
        p.add_argument("prompt", nargs="?", help="conditioning prompt (text or class label)")
        if name == "inpaint":
            p.add_argument("--start", type=float, help="audio: gap start (s)")
            p.add_argument("--end", type=float, help="audio: gap end (s)")
            p.add_argument("--mask", help="image: a greyscale PNG of the image's size, white = regenerate")
            p.add_argument("--extend", metavar="LEFT,RIGHT,TOP,BOTTOM",
                           help="image: outpaint, adding this many pixels on each side (the result must be the "
                                "model's size)")
            p.add_argument("--method", default="replace", choices=["replace", "repaint"])
        elif name == "continue":
            p.add_argument("--duration", type=float, required=True, help="total length of the output (s)")
        else:
            p.add_argument("--strength", type=float, default=0.5, help="0 = unchanged ... 1 = ignore the input")
        if name != "continue":
            p.add_argument("--resize", action="store_true",
                           help="image: resample an input of another size to the model's (else it is an error)")
        _common(p, name)
        p.set_defaults(func=_guard(_edit))

    p = sub.add_parser("models", help="list the models that ship with sonodiff")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_models)
