"""`Pipeline`: generate and edit audio with an exported sonodiff model.

    pipe = Pipeline.from_pretrained("fsdd_digits_mel")            # a shipped model name or a directory
    out = pipe(["7", "3"], seeds=[0, 1], num_steps=25)             # out.audio [B, C, T], out.sample_rate
    out = pipe(["7"], sampler="ddim", sampler_options={"eta": 0.5}, schedule="karras",
               schedule_options={"rho": 5}, guidance_scale=3, cfg_rescale=0.7)  # every core setting reaches here
    gap = pipe.inpaint(audio, sr, start_s=0.2, end_s=0.4, prompts=["7"])
    more = pipe.continue_audio(audio, sr, duration_s=2.0, prompts=["7"])
    var = pipe.vary(audio, sr, strength=0.5, prompts=["7"])
    for chunk in pipe.stream(["7"], duration_s=10): ...           # long-form, chunk by chunk

    pipe = Pipeline.from_pretrained("mnist_digits")                # an image model
    out = pipe("a handwritten seven", num_per_prompt=4)             # out.images uint8 [B, C, H, W]
    fix = pipe.inpaint_image(img, mask, "a handwritten seven")      # mask [H, W] True = regenerate
    big = pipe.outpaint_image(img, extend=(0, 0, 8, 0))             # left, right, top, bottom pixels
    var = pipe.vary_image(img, strength=0.5, prompts="the digit 3")

Image models go through the same sampling, guidance and editing code: their diffusion space is the pixels
scaled to [-1, 1], and edited images keep every known pixel exactly.

Work happens in the model's diffusion space (e.g. normalised log-mels); editing encodes the given audio
with the model's codec, edits there (replacement inpainting / SDEdit from :mod:`sonodiff.core.editing`),
decodes, and composites in the audio domain so that audio outside the edited region is returned
unchanged (short equal-power crossfades at the borders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from sonodiff.pipelines.decode import crossfade_join, equal_power_fade, features_to_audio
from sonodiff.pipelines.sampling import (
    check_sampler_options,
    generate_latents,
    guided_denoiser,
    inference_values,
    sampling_grid,
    seed_generators,
    takes_prompt,
)

__all__ = ["Pipeline", "Generation", "MAX_DURATION_S"]

MAX_DURATION_S = 600.0  # longer requests are almost certainly a unit mistake
CPU_MAX_ROWS = 8  # network rows per call on CPU (MicroBatched); GPUs take the whole batch
FADE_S = 0.01  # crossfade at edit borders


@dataclass(frozen=True)
class Generation:
    """What was generated. Audio models: ``audio [B, C, T]`` float32 at ``sample_rate`` Hz (``images`` None).
    Image models: ``images`` uint8 ``[B, C, H, W]`` (``audio`` and ``sample_rate`` None). ``features``
    ``[B, C, ...]`` in diffusion space."""

    audio: Tensor | None
    sample_rate: int | None
    seeds: tuple[int, ...]
    prompts: tuple
    features: Tensor
    images: Tensor | None = None

    @property
    def modality(self) -> str:
        return "image" if self.images is not None else "audio"


class Pipeline:
    """An exported model (:func:`sonodiff.models.model_dir.load_model_dir`) ready to sample."""

    def __init__(self, model, codec, config: dict, path: str | Path = "") -> None:
        self.model, self.codec, self.config, self.path = model, codec, config, str(path)
        self.device = torch.device("cpu")
        self.max_rows: int | None = CPU_MAX_ROWS  # see to(); None: no micro-batching
        self.guide = None  # a weaker DiffusionModel of the same task: autoguidance (set_guide)
        self.guide_path = ""
        self.vocoder = None  # mel models: what voices the decoded log-mels (set_vocoder; None = Griffin-Lim)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32, guide: str | Path | None = "model",
                        vocoder: str | Path = "model") -> "Pipeline":
        """Load a shipped model by name (``sonodiff models``) or an exported directory.

        ``guide``: the autoguidance model (:meth:`set_guide`): ``"model"`` (default) loads the one the model's
        ``sampling.guide`` names (a directory relative to the model's), if any; ``None``: none (classifier-free
        guidance); or a model name / directory.
        ``vocoder`` (mel models, :meth:`set_vocoder`): ``"model"`` (default) is the one the model's
        ``audio.vocoder`` names; or ``"griffin_lim"``, a shipped vocoder name or a vocoder directory."""
        from sonodiff.models import resolve_model
        from sonodiff.models.model_dir import load_model_dir

        path = resolve_model(name_or_path)
        model, codec, config = load_model_dir(path)
        pipe = cls(model, codec, config, path)
        if isinstance(guide, str) and guide == "model":
            own = config.get("sampling", {}).get("guide")
            guide = Path(path) / own if own else None
        if guide is not None:
            pipe.set_guide(guide)
        if codec.mel_config is not None:
            pipe.set_vocoder(config["audio"].get("vocoder", "griffin_lim") if vocoder == "model" else vocoder)
        elif vocoder not in ("model", None, "none"):
            raise ValueError(f"{path}: a {codec.name!r} model decodes to {codec.modality} itself; it takes no vocoder "
                             f"(got vocoder={vocoder!r})")
        return pipe.to(device, dtype)

    def set_vocoder(self, vocoder: str | Path) -> "Pipeline":
        """Voice this mel model's features with ``vocoder``: ``"griffin_lim"``, a shipped vocoder name or a
        vocoder model directory (relative paths are tried against the model's directory first). A vocoder
        trained on other mel settings than this model's codec is a clear error naming both."""
        from sonodiff.models.vocoders import load_vocoder

        if self.codec.mel_config is None:
            raise ValueError(f"a {self.codec.name!r} model decodes to audio itself; it takes no vocoder")
        self.vocoder = load_vocoder(vocoder, expect=self.codec.mel_config, base=self.path or None)
        return self

    def set_guide(self, guide: "str | Path | Pipeline | None") -> "Pipeline":
        """Guide with a weaker model of the same task (autoguidance, Karras et al. 2024) instead of the
        unconditional branch: ``guidance_scale`` w then gives D_guide + w (D - D_guide). ``guide``: a model name,
        an exported directory or a Pipeline; it must share this model's codec (same features and statistics)
        and conditioning. ``None`` returns to classifier-free guidance."""
        if guide is None:
            self.guide, self.guide_path = None, ""
            return self
        if isinstance(guide, Pipeline):
            other, where = guide, guide.path or "<pipeline>"
        else:
            from sonodiff.models import resolve_model
            from sonodiff.models.model_dir import load_model_dir

            gp = resolve_model(guide)
            m, c, cfg = load_model_dir(gp)
            other, where = Pipeline(m, c, cfg, gp), str(gp)
        for key in ("conditioning",):
            a, b = self.config["model"].get(key), other.config["model"].get(key)
            if a != b:
                raise ValueError(f"guide {where}: its model.{key} {b!r} differs from this model's {a!r}; "
                                 f"autoguidance needs a guide of the same task")
        mine, theirs = self.codec.config_dict(), other.codec.config_dict()
        if mine != theirs or self._feature_shape() != other._feature_shape():
            raise ValueError(f"guide {where}: its codec ({theirs}, features {other._feature_shape()}) differs from "
                             f"this model's ({mine}, features {self._feature_shape()}); autoguidance needs the same "
                             f"feature space")
        ta, tb = self.codec.stats(), other.codec.stats()
        if ta.keys() != tb.keys() or any(not torch.equal(ta[k], tb[k]) for k in ta):
            raise ValueError(f"guide {where}: its codec statistics differ from this model's (fitted on other "
                             f"data); autoguidance needs the same normalised feature space")
        other.model.eval()
        self.guide, self.guide_path = other.model, where
        dev = next(self.model.parameters()).device
        dt = next(self.model.denoiser.net.parameters()).dtype
        self.guide.to(dev)
        self.guide.denoiser.net.to(dtype=dt)
        if getattr(self.guide.denoiser.net, "dims", None) == 2:
            self.guide.denoiser.net.to(memory_format=torch.channels_last)
        return self

    def _guide_denoiser(self):
        return None if self.guide is None else self.guide.denoiser

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Pipeline":
        """Move the network (and conditioner) to ``device`` / compute ``dtype``; sampling state stays float64."""
        if device is not None:
            self.device = torch.device(device)
            self.model.to(self.device)
            if self.guide is not None:
                self.guide.to(self.device)
            self.max_rows = CPU_MAX_ROWS if self.device.type == "cpu" else None
        if getattr(self.model.denoiser.net, "dims", None) == 2:
            # 2-D nets run their convolutions in channels-last (NHWC) layout: oneDNN and cuDNN pick faster
            # kernels for it (about 15% per step on 2 CPU cores for corpus_sfx_mel); numerics stay fp32.
            self.model.denoiser.net.to(memory_format=torch.channels_last)
            if self.guide is not None:
                self.guide.denoiser.net.to(memory_format=torch.channels_last)
        if dtype is not None:
            if dtype not in (torch.float32, torch.bfloat16, torch.float16):
                raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
            self.model.denoiser.net.to(dtype=dtype)
            if self.guide is not None:
                self.guide.denoiser.net.to(dtype=dtype)
        return self

    # ------------------------------------------------------------------ facts
    @property
    def modality(self) -> str:
        """``"audio"`` or ``"image"``: what this model generates (its codec's modality)."""
        return self.codec.modality

    @property
    def image_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images an image model generates and edits."""
        if self.modality != "image":
            raise ValueError(f"{self._name()} is an audio model: it has no image size")
        return (self.codec.channels, *self.codec.size)

    @property
    def sample_rate(self) -> int:
        if self.modality != "audio":
            raise ValueError(f"{self._name()} is an image model ({'x'.join(map(str, self.image_size))}): it has no "
                             "sample rate")
        return int(self.codec.sample_rate)

    @property
    def train_seconds(self) -> float:
        if self.modality != "audio":
            raise ValueError(f"{self._name()} is an image model: it has no duration")
        return float(self.config["audio"]["seconds"])

    def _name(self) -> str:
        return f"model {self.config.get('source', {}).get('name') or self.path or '?'!r}"

    def _need(self, modality: str, what: str) -> None:
        if self.modality != modality:
            alt = {"audio": "inpaint_image / outpaint_image / vary_image and images",
                   "image": "inpaint / continue_audio / vary / stream and audio"}[self.modality]
            raise ValueError(f"{what} is for {modality} models; {self._name()} is an {self.modality} model "
                             f"(use {alt})")

    @property
    def max_window_seconds(self) -> float:
        """Longest clip generated in one pass (``audio.max_window_seconds`` of the model's config; default the
        training length). Longer requests are generated as overlapping windows of this length."""
        w = self.config["audio"].get("max_window_seconds", self.train_seconds)
        if not isinstance(w, (int, float)) or not w >= self.train_seconds:
            raise ValueError(f"{self.path}/config.json: audio.max_window_seconds must be a number >= the training "
                             f"length {self.train_seconds} s, got {w!r}")
        return float(w)

    @property
    def is_conditional(self) -> bool:
        return self.model.conditioner is not None

    @property
    def takes_prompt(self) -> bool:
        """Whether generation needs prompts (text or labels); a timing-only model is conditional but takes none."""
        return self.is_conditional and takes_prompt(self.model.conditioner)

    @property
    def labels(self) -> list[str] | None:
        """Valid prompts of a class-conditional model (None for text or unconditional models)."""
        c = self.model.conditioner
        return list(c.config.labels) if c is not None and getattr(c.config, "labels", None) else None

    def _frames(self, seconds: float) -> int:
        from sonodiff.models.diffusion import frames_for_seconds

        return frames_for_seconds(self.codec, seconds)

    def _feature_shape(self) -> tuple[int, ...]:
        if self.modality == "image":
            return self.image_size[:-1]
        with torch.no_grad():
            f = self.codec.analyze(torch.zeros(1, self.codec.channels, self.sample_rate // 10))
        return tuple(f.shape[1:-1])

    def provenance(self, prompt, seed: int, *, model: str | None = None, num_steps: int | None = None, sampler=None,
                   schedule=None, guidance_scale=None, guidance_interval="model", sampler_options=None,
                   schedule_options=None, cfg_rescale=None, negative_prompt=None, **extra) -> dict:
        """The sidecar of one generated clip: prompt, seed, every sampling setting as resolved against the model's
        defaults (the same arguments as :meth:`__call__`), the model as the user named it (``model``; default its
        own name), its weights' hash, vocoder and guide, plus ``extra`` (e.g. ``duration_s``). Shipped parts are
        named, never this machine's paths; the CLI, the HTTP service and the demo all write this."""
        from sonodiff import __version__

        sp = self._sampling(num_steps, sampler, schedule, guidance_scale, guidance_interval, sampler_options,
                            schedule_options, cfg_rescale)
        gi = sp["guidance_interval"]
        name = self.config["source"].get("name")
        return {"prompt": prompt, "seed": seed, "steps": sp["num_steps"], "sampler": sp["sampler"],
                "sampler_options": sp["sampler_options"], "schedule": sp["schedule"],
                "schedule_options": sp["schedule_options"], "cfg_rescale": sp["cfg_rescale"],
                "guidance_scale": sp["guidance_scale"], "guidance_interval": None if gi is None else list(gi),
                "negative_prompt": negative_prompt, "model": str(model) if model else name, "model_name": name,
                "weights_sha256_16": self.config.get("weights_sha256_16"),
                "vocoder": _short_path(self.vocoder.name) if self.vocoder is not None else None,
                "guide": _short_path(self.guide_path) if self.guide is not None else None,
                **({"sample_rate": self.sample_rate} if self.modality == "audio" else
                   {"image_size": list(self.image_size)}),
                "sonodiff_version": __version__, **extra}

    # ------------------------------------------------------------------ argument checks
    def _check_duration(self, duration_s) -> float:
        if self.modality != "audio":
            if duration_s is not None:
                raise ValueError(f"duration_s has no meaning for an image model ({self._name()} generates "
                                 f"{'x'.join(map(str, self.image_size))} images); got {duration_s!r}")
            return 0.0
        if duration_s is None:
            return self.train_seconds
        if not isinstance(duration_s, (int, float)) or not math.isfinite(duration_s) or duration_s <= 0:
            raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
        if duration_s > MAX_DURATION_S:
            raise ValueError(f"duration_s={duration_s} is over the {MAX_DURATION_S:.0f} s limit (seconds, not samples?)")
        min_samples = self.codec.mel_config.n_fft if self.codec.mel_config is not None else 1
        if duration_s * self.sample_rate < min_samples:
            raise ValueError(f"duration_s={duration_s} is shorter than one analysis window ({min_samples} samples)")
        return float(duration_s)

    def _rows(self, prompts, num_per_prompt: int, seeds) -> tuple[list, list[int]]:
        if num_per_prompt < 1:
            raise ValueError(f"num_per_prompt must be >= 1, got {num_per_prompt}")
        if prompts is None:
            if self.takes_prompt:
                hint = f"; valid labels: {self.labels}" if self.labels else ""
                raise ValueError(f"this model is conditional: give prompts{hint}")
            rows = [None] * num_per_prompt
        else:
            if isinstance(prompts, str):
                prompts = [prompts]
            prompts = list(prompts)
            if not prompts:
                raise ValueError("prompts is empty")
            for p in prompts:
                if (isinstance(p, tuple) and len(p) == 3 and p[0] == "audio" and self.is_conditional
                        and self.model.conditioner.name == "clap_inhouse"):
                    continue  # an audio prompt ("audio", clip [T], sample_rate): embedded by the in-house CLAP
                if not isinstance(p, str) or not p.strip():
                    raise ValueError(f"every prompt must be a non-empty string, got {p!r}")
                if self.labels is not None and p not in self.labels:
                    raise ValueError(f"prompt {p!r} is not a label of this class-conditional model; valid: {self.labels}")
            if not self.is_conditional:
                raise ValueError("this model is unconditional: call it without prompts")
            if not self.takes_prompt:
                raise ValueError(f"this model takes no prompt (its conditioning is {self.model.conditioner.name!r}, "
                                 "filled in from the duration): call it without prompts")
            rows = [p for p in prompts for _ in range(num_per_prompt)]
        if seeds is None:
            seeds = list(range(len(rows)))
        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        if len(seeds) != len(rows):
            raise ValueError(f"got {len(seeds)} seeds for {len(rows)} outputs (prompts x num_per_prompt)")
        seed_generators(seeds)  # validates
        return rows, seeds

    def _conds(self, rows: list, negative_prompt, duration_s: float, start_s: float = 0.0):
        """(cond, negative) of the rows; a timing conditioner is given ``start_s`` and ``duration_s`` (the window's
        offset in, and the length of, the whole output)."""
        c = self.model.conditioner
        if c is None:
            return None, None
        cond = self.model.cond([inference_values(c, r, duration_s, start_s) for r in rows], device=self.device)
        negative = None
        if negative_prompt is not None:
            if not self.takes_prompt:
                raise ValueError("negative_prompt needs a model that takes prompts; this one takes none")
            neg = [negative_prompt] * len(rows) if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(neg) != len(rows) or any(not isinstance(n, str) or not n.strip() for n in neg):
                raise ValueError(f"negative_prompt must be a non-empty string or one per output ({len(rows)}), got {negative_prompt!r}")
            negative = self.model.cond([inference_values(c, n, duration_s, start_s) for n in neg], device=self.device)
        return cond, negative

    def _sampling(self, num_steps, sampler, schedule, guidance_scale, guidance_interval="model", sampler_options=None,
                  schedule_options=None, cfg_rescale=None) -> dict:
        """Every sampling setting resolved against the model's ``sampling`` defaults and checked.

        The model's ``sampler_options`` / ``schedule_options`` apply when its own sampler / schedule is used (the
        given ones override them key by key); another sampler or schedule starts from its own defaults.
        """
        s = self.config["sampling"]
        from sonodiff.core import SCHEDULES

        sampler = sampler or s["sampler"]
        if sampler_options is not None and not isinstance(sampler_options, dict):
            raise ValueError(f"sampler_options must be a dict of option -> value, got {sampler_options!r}")
        base = s.get("sampler_options", {}) if sampler == s["sampler"] else {}
        sampler_options = check_sampler_options(sampler, {**base, **(sampler_options or {})})
        num_steps = s["num_steps"] if num_steps is None else num_steps  # None: the model's default
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1 or num_steps > 1000:
            raise ValueError(f"num_steps must be an int in [1, 1000], got {num_steps!r}")
        schedule = schedule or s["schedule"]
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid names: {sorted(SCHEDULES)}")
        if schedule_options is not None and not isinstance(schedule_options, dict):
            raise ValueError(f"schedule_options must be a dict of option -> value, got {schedule_options!r}")
        schedule_options = {**(s.get("schedule_options", {}) if schedule == s["schedule"] else {}),
                            **(schedule_options or {})}
        try:  # built here once so that a bad option is an error before any conditioning or sampling
            sampling_grid(schedule, num_steps, s["sigma_min"], s["sigma_max"], schedule_options)
        except (TypeError, ValueError) as e:
            raise ValueError(f"schedule {schedule!r} with schedule_options {schedule_options}: {e}") from None
        g = s["guidance_scale"] if guidance_scale is None else guidance_scale
        if not isinstance(g, (int, float)) or not math.isfinite(g) or g < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        phi = s.get("cfg_rescale", 0.0) if cfg_rescale is None else cfg_rescale
        if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not 0.0 <= phi <= 1.0:
            raise ValueError(f"cfg_rescale (guidance rescale phi, Lin et al. 2024) must be a number in [0, 1], "
                             f"got {cfg_rescale!r}")
        gi = s.get("guidance_interval") if isinstance(guidance_interval, str) and guidance_interval == "model" \
            else guidance_interval
        if gi is not None:
            ok = (isinstance(gi, (list, tuple)) and len(gi) == 2 and all(isinstance(v, (int, float)) for v in gi)
                  and 0 <= gi[0] < gi[1])
            if not ok:
                raise ValueError(f"guidance_interval must be (lo, hi) noise levels with 0 <= lo < hi, or None, got {gi!r}")
            gi = (float(gi[0]), float(gi[1]))
        return {"num_steps": num_steps, "sampler": sampler, "sampler_options": sampler_options, "schedule": schedule,
                "schedule_options": schedule_options, "guidance_scale": float(g), "guidance_interval": gi,
                "cfg_rescale": float(phi), "sigma_min": s["sigma_min"], "sigma_max": s["sigma_max"]}

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(self, prompts: str | Sequence[str] | None = None, *, num_per_prompt: int = 1,
                 negative_prompt: str | Sequence[str] | None = None, duration_s: float | None = None,
                 num_steps: int | None = None, sampler: str | None = None, schedule: str | None = None,
                 guidance_scale: float | None = None, guidance_interval="model",
                 sampler_options: dict | None = None, schedule_options: dict | None = None,
                 cfg_rescale: float | None = None,
                 seeds: Sequence[int] | int | None = None, callback: Callable | None = None,
                 clap_guidance: tuple | None = None) -> Generation:
        """Text/class-to-audio or unconditional generation. Sample k depends only on (prompt k, seed k).

        ``sampler`` (``sonodiff.core.SAMPLERS``) with ``sampler_options``, its keyword options (e.g. ``{"eta": 0.5}``
        for ddim / euler_ancestral / the SDE solvers, ``{"s_churn": 40, "s_tmin": 0.05, "s_tmax": 50}`` for heun,
        ``{"predictor": "euler", "snr": 0.1}`` for langevin_pc; ``sonodiff samplers`` lists them); ``schedule``
        (``sonodiff.core.SCHEDULES``: karras, exponential, logsnr over the model's noise range, the VP spacings
        linspace / leading / trailing of a ``beta_schedule``, flow with ``shift``) with ``schedule_options``. The
        model's own options apply to its own sampler and schedule unless overridden. ``guidance_scale``: the
        classifier-free guidance weight; ``cfg_rescale``: guidance rescale phi in [0, 1] (Lin et al. 2024, in x0
        space; default the model's, 0 = off).
        ``guidance_interval``: ``(lo, hi)``: apply guidance only at noise levels lo < sigma <= hi (Kynkaanniemi
        et al. 2024); elsewhere the unconditional branch is skipped. ``None``: guide at every step; default: the
        model's ``sampling.guidance_interval``. Durations up to :attr:`max_window_seconds` are generated in one
        pass; longer ones as overlapping windows (:meth:`stream`).
        ``clap_guidance``: ``(clap, scale)``: also guide by the gradient of the in-house CLAP's similarity between
        the denoised estimate and the prompt (:func:`sonodiff.eval.clap.clap_feature_score`; a mel model whose
        codec has the CLAP's mel settings; one pass, no streaming).
        """
        duration_s = self._check_duration(duration_s)
        sp = self._sampling(num_steps, sampler, schedule, guidance_scale, guidance_interval, sampler_options,
                            schedule_options, cfg_rescale)
        if self.modality == "image":
            if clap_guidance is not None:
                raise ValueError("clap_guidance guides audio models by the in-house CLAP; this is an image model")
            rows, seeds = self._rows(prompts, num_per_prompt, seeds)
            cond, negative = self._conds(rows, negative_prompt, duration_s)
            z = generate_latents(self.model.denoiser, self.image_size, seeds, cond=cond, negative=negative,
                                 callback=callback, device=self.device, max_rows=self.max_rows,
                                 guide=self._guide_denoiser(), **sp)
            return Generation(None, None, tuple(seeds), tuple(rows), z.cpu(), images=self.codec.decode(z.float().cpu()))
        if duration_s > self.max_window_seconds * 1.001:
            if clap_guidance is not None:
                raise ValueError(f"CLAP guidance generates in one pass: duration {duration_s} s is longer than this "
                                 f"model's window of {self.max_window_seconds} s")
            chunks = list(self.stream(prompts, duration_s=duration_s, num_per_prompt=num_per_prompt,
                                      negative_prompt=negative_prompt, num_steps=num_steps, sampler=sampler,
                                      schedule=schedule, guidance_scale=guidance_scale,
                                      guidance_interval=guidance_interval, sampler_options=sampler_options,
                                      schedule_options=schedule_options, cfg_rescale=cfg_rescale, seeds=seeds,
                                      callback=callback))
            rows, seeds = self._rows(prompts, num_per_prompt, seeds)
            audio = torch.cat(chunks, dim=-1)[..., : int(round(duration_s * self.sample_rate))]
            return Generation(audio, self.sample_rate, tuple(seeds), tuple(rows), torch.empty(0))
        rows, seeds = self._rows(prompts, num_per_prompt, seeds)
        cond, negative = self._conds(rows, negative_prompt, duration_s)
        score = None
        if clap_guidance is not None:
            from sonodiff.eval.clap import clap_feature_score

            clap, scale = clap_guidance
            if any(r is None for r in rows):
                raise ValueError("CLAP guidance needs a text prompt for every sample")
            score = (clap_feature_score(clap, self.codec, [str(r) for r in rows]), float(scale))
        z = generate_latents(self.model.denoiser, self._feature_shape() + (self._frames(duration_s),), seeds,
                             cond=cond, negative=negative, callback=callback, device=self.device, max_rows=self.max_rows,
                             guide=self._guide_denoiser(), score_guidance=score, **sp)
        audio = features_to_audio(self.codec, z.cpu(), length=int(round(duration_s * self.sample_rate)), vocoder=self.vocoder)
        return Generation(audio, self.sample_rate, tuple(seeds), tuple(rows), z.cpu())

    def best_of(self, prompts, scorer: Callable[[Tensor, int, list], Tensor], num_candidates: int = 4,
                seed: int = 0, **kwargs) -> Generation:
        """Re-ranking: ``num_candidates`` samples per prompt, keep the one ``scorer(audio [N, C, T], sr, prompts)
        -> [N]`` rates highest (e.g. a classifier's log-probability of the prompt's class, or CLAP similarity).
        Image models call ``scorer(images uint8 [N, C, H, W], None, prompts)``."""
        if isinstance(prompts, str) or prompts is None:
            prompts = [prompts] if prompts is not None else None
        n = len(prompts) if prompts is not None else 1
        seeds = [seed + i for i in range(n * num_candidates)]
        gen = self(prompts, num_per_prompt=num_candidates, seeds=seeds, **kwargs)
        data = gen.images if gen.images is not None else gen.audio
        scores = torch.as_tensor(scorer(data, gen.sample_rate, list(gen.prompts)), dtype=torch.float64)
        if scores.shape != (n * num_candidates,):
            raise ValueError(f"scorer must return [{n * num_candidates}] scores, got {tuple(scores.shape)}")
        best = scores.reshape(n, num_candidates).argmax(1) + torch.arange(n) * num_candidates
        return Generation(gen.audio[best] if gen.audio is not None else None, gen.sample_rate,
                          tuple(gen.seeds[i] for i in best.tolist()), tuple(gen.prompts[i] for i in best.tolist()),
                          gen.features[best] if gen.features.numel() else gen.features,
                          images=gen.images[best] if gen.images is not None else None)

    # ------------------------------------------------------------------ editing
    def _encode_input(self, audio: Tensor, sample_rate: int) -> Tensor:
        self._need("audio", "this edit (audio given with a sample rate)")
        if sample_rate != self.sample_rate:
            raise ValueError(f"input audio is at {sample_rate} Hz but this model works at {self.sample_rate} Hz; "
                             f"resample it first (sonodiff.audio.io.resample)")
        if audio.ndim != 2 or audio.shape[0] != self.codec.channels:
            raise ValueError(f"input audio must be [C={self.codec.channels}, T], got {tuple(audio.shape)}")
        if audio.shape[-1] < self.sample_rate * 0.05:
            raise ValueError(f"input audio is too short ({audio.shape[-1]} samples)")
        with torch.no_grad():
            return self.codec.encode(audio[None].float()).to(self.device)

    def _guided(self, rows, negative_prompt, sampling: dict, duration_s: float, start_s: float = 0.0):
        """(denoiser with classifier-free guidance when it applies, cond) for the given rows."""
        cond, negative = self._conds(rows, negative_prompt, duration_s, start_s)
        D = guided_denoiser(self.model.denoiser, cond, negative=negative, guidance_scale=sampling["guidance_scale"],
                            guidance_interval=sampling["guidance_interval"], cfg_rescale=sampling["cfg_rescale"],
                            max_rows=self.max_rows, guide=self._guide_denoiser())
        return D, cond

    def _grid(self, sampling: dict) -> Tensor:
        return sampling_grid(sampling["schedule"], sampling["num_steps"], sampling["sigma_min"], sampling["sigma_max"],
                             sampling["schedule_options"])

    def _edit_sample(self, x_known: Tensor, mask: Tensor, rows, seeds, negative_prompt, method: str, sampling: dict,
                     duration_s: float, start_s: float = 0.0, callback=None):
        from sonodiff.core.editing import inpaint, repaint

        D, cond = self._guided(rows, negative_prompt, sampling, duration_s, start_s)
        gens = seed_generators(seeds)
        sigmas = self._grid(sampling)
        x = torch.stack([torch.randn(x_known.shape[1:], generator=g, dtype=torch.float64) for g in gens])
        x = (x * sigmas[0]).to(self.device)
        if method == "replace":
            return inpaint(D, x_known, mask, x, sigmas.to(self.device), sampling["sampler"], cond=cond, generator=gens,
                           callback=callback, **sampling["sampler_options"])
        if method == "repaint":
            if callback is not None:
                raise ValueError("method='repaint' takes its own jump-back path and reports no per-step callback; "
                                 "use method='replace'")
            return repaint(D, x_known, mask, sigmas.to(self.device), cond=cond, generator=gens)
        raise ValueError(f"unknown inpainting method {method!r}; valid: ['repaint', 'replace']")

    @torch.no_grad()
    def inpaint(self, audio: Tensor, sample_rate: int, start_s: float, end_s: float, prompts=None, *,
                seeds=None, method: str = "replace", negative_prompt=None, num_steps: int | None = None, sampler=None,
                schedule=None, guidance_scale=None, guidance_interval="model", sampler_options=None, schedule_options=None, cfg_rescale=None,
                callback=None) -> Generation:
        """Regenerate ``[start_s, end_s)`` of ``audio [C, T]``; the rest is returned unchanged.

        Sampling settings as in :meth:`__call__`. ``method="repaint"`` takes RePaint's own ancestral steps, so
        ``sampler_options`` do not apply to it."""
        T = audio.shape[-1]
        dur = T / sample_rate
        if not (0 <= start_s < end_s <= dur):
            raise ValueError(f"need 0 <= start_s < end_s <= {dur:.3f} s (the input's length), got {start_s}, {end_s}")
        if method == "repaint" and sampler_options:
            raise ValueError(f"method='repaint' takes its own ancestral (DDPM) steps; sampler_options {sampler_options} "
                             "do not apply to it (use method='replace')")
        sp = self._sampling(num_steps, sampler, schedule, guidance_scale, guidance_interval, sampler_options,
                            schedule_options, cfg_rescale)
        z = self._encode_input(audio, sample_rate)
        rows, seeds = self._rows(prompts, 1, seeds)
        z = z.expand(len(rows), *z.shape[1:]).contiguous()
        f0, f1 = self._frames(start_s) - 1, self._frames(end_s)
        mask = torch.ones_like(z, dtype=torch.bool)
        mask[..., max(f0, 0):min(f1, z.shape[-1])] = False
        out = self._edit_sample(z, mask, rows, seeds, negative_prompt, method, sp, dur, callback=callback)
        gen = features_to_audio(self.codec, out.float().cpu(), length=T, vocoder=self.vocoder)
        a, b = int(round(start_s * sample_rate)), int(round(end_s * sample_rate))
        res = torch.stack([_splice(audio, g, a, b, int(FADE_S * sample_rate)) for g in gen])
        return Generation(res, sample_rate, tuple(seeds), tuple(rows), out.float().cpu())

    @torch.no_grad()
    def continue_audio(self, audio: Tensor, sample_rate: int, duration_s: float, prompts=None, *, seeds=None,
                       negative_prompt=None, num_steps: int | None = None, sampler=None, schedule=None,
                       guidance_scale=None, guidance_interval="model", sampler_options=None, schedule_options=None, cfg_rescale=None,
                       callback=None) -> Generation:
        """Continue ``audio [C, T]`` to a total of ``duration_s``; the original prefix is kept exactly.
        Sampling settings as in :meth:`__call__`."""
        duration_s = self._check_duration(duration_s)
        sp = self._sampling(num_steps, sampler, schedule, guidance_scale, guidance_interval, sampler_options,
                            schedule_options, cfg_rescale)
        T = audio.shape[-1]
        if duration_s * sample_rate <= T:
            raise ValueError(f"duration_s={duration_s} must exceed the input's length ({T / sample_rate:.3f} s)")
        z = self._encode_input(audio, sample_rate)
        rows, seeds = self._rows(prompts, 1, seeds)
        total = self._frames(duration_s)
        known_frames = z.shape[-1] - 1  # the last frame straddles the end of the input
        from sonodiff.core.editing import continuation_inputs

        x_known, mask = continuation_inputs(z[..., :known_frames].expand(len(rows), *z.shape[1:-1], known_frames), total)
        out = self._edit_sample(x_known.contiguous(), mask, rows, seeds, negative_prompt, "replace", sp, duration_s,
                                callback=callback)
        n_out = int(round(duration_s * sample_rate))
        gen = features_to_audio(self.codec, out.float().cpu(), length=n_out, vocoder=self.vocoder)
        fade = int(FADE_S * sample_rate)
        res = torch.stack([_splice(torch.nn.functional.pad(audio, (0, n_out - T)), g, T, n_out, fade) for g in gen])
        return Generation(res, sample_rate, tuple(seeds), tuple(rows), out.float().cpu())

    @torch.no_grad()
    def vary(self, audio: Tensor, sample_rate: int, strength: float, prompts=None, *, seeds=None,
             negative_prompt=None, num_steps: int | None = None, sampler=None, schedule=None, guidance_scale=None,
             guidance_interval="model", sampler_options=None, schedule_options=None, cfg_rescale=None,
             callback=None) -> Generation:
        """SDEdit variation / style transfer of ``audio [C, T]``: strength 0 returns it unchanged, 1 ignores it.
        Sampling settings as in :meth:`__call__`."""
        from sonodiff.core import sample
        from sonodiff.core.editing import sdedit_start

        if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        sp = self._sampling(num_steps, sampler, schedule, guidance_scale, guidance_interval, sampler_options,
                            schedule_options, cfg_rescale)
        z = self._encode_input(audio, sample_rate)
        rows, seeds = self._rows(prompts, 1, seeds)
        if strength == 0:  # nothing is noised, so nothing is generated: the input is the result
            return Generation(audio[None].expand(len(rows), *audio.shape).clone(), sample_rate, tuple(seeds),
                              tuple(rows), z.expand(len(rows), *z.shape[1:]).cpu())
        D, cond = self._guided(rows, negative_prompt, sp, audio.shape[-1] / sample_rate)
        gens = seed_generators(seeds)
        sigmas = self._grid(sp)
        x, grid = sdedit_start(z.expand(len(rows), *z.shape[1:]).double(), sigmas.to(self.device), strength=strength,
                               generator=gens)
        out = (sample(D, x, grid, sp["sampler"], cond=cond, generator=gens, callback=callback, **sp["sampler_options"])
               if len(grid) > 1 else x)
        res = features_to_audio(self.codec, out.float().cpu(), length=audio.shape[-1], vocoder=self.vocoder)
        return Generation(res, sample_rate, tuple(seeds), tuple(rows), out.float().cpu())

    # ------------------------------------------------------------------ image editing
    def _check_image(self, image: Tensor, what: str = "image") -> Tensor:
        """uint8 ``[C, H, W]`` of this model's channels and size, or a clear error."""
        self._need("image", f"{what} editing")
        C, H, W = self.image_size
        if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.ndim != 3:
            got = f"{image.dtype} {list(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"{what} must be a uint8 tensor [C, H, W] (0..255), got {got}")
        if tuple(image.shape) != (C, H, W):
            raise ValueError(f"{what} is {image.shape[0]}x{image.shape[1]}x{image.shape[2]} (CxHxW); this model takes "
                             f"{C}x{H}x{W} images")
        return image

    def _encode_image(self, image: Tensor) -> Tensor:
        with torch.no_grad():
            return self.codec.encode(image[None]).to(self.device)

    @torch.no_grad()
    def inpaint_image(self, image: Tensor, mask: Tensor, prompts=None, *, seeds=None, method: str = "replace",
                      negative_prompt=None, num_steps: int | None = None, sampler=None, schedule=None,
                      guidance_scale=None, guidance_interval="model", sampler_options=None, schedule_options=None,
                      cfg_rescale=None, callback=None) -> Generation:
        """Regenerate the pixels of ``image`` (uint8 ``[C, H, W]``) where ``mask`` (bool ``[H, W]``) is True, by the
        same replacement / RePaint inpainting as audio (:mod:`sonodiff.core.editing`); every other pixel is
        returned exactly as given. One output per prompt (or per seed, for an unconditional model)."""
        self._check_image(image)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(image.shape[1:]):
            got = f"{mask.dtype} {list(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor [H, W] = {list(image.shape[1:])} (True = regenerate), "
                             f"got {got}")
        if not bool(mask.any()):
            raise ValueError("mask selects no pixel to regenerate (True = regenerate)")
        if method == "repaint" and sampler_options:
            raise ValueError(f"method='repaint' takes its own ancestral (DDPM) steps; sampler_options {sampler_options} "
                             "do not apply to it (use method='replace')")
        sp = self._sampling(num_steps, sampler, schedule, guidance_scale, guidance_interval, sampler_options,
                            schedule_options, cfg_rescale)
        rows, seeds = self._rows(prompts, 1, seeds)
        z = self._encode_image(image).expand(len(rows), *image.shape).contiguous()
        known = (~mask).to(self.device).expand_as(z).contiguous()
        out = self._edit_sample(z, known, rows, seeds, negative_prompt, method, sp, 0.0, callback=callback)
        gen = self.codec.decode(out.float().cpu())
        res = torch.where(mask.cpu(), gen, image[None].cpu())
        return Generation(None, None, tuple(seeds), tuple(rows), out.float().cpu(), images=res)

    @torch.no_grad()
    def outpaint_image(self, image: Tensor, extend: Sequence[int], prompts=None, *, seeds=None, **kwargs) -> Generation:
        """Extend ``image`` (uint8 ``[C, h, w]``) by ``extend = (left, right, top, bottom)`` pixels and generate the
        new border (inpainting of it, :meth:`inpaint_image`); the result must be this model's size (an image model
        generates the size it was trained on), so e.g. a 20x28 crop with ``extend=(0, 0, 8, 0)`` becomes 28x28."""
        self._need("image", "outpainting")
        if (not isinstance(extend, (list, tuple)) or len(extend) != 4
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in extend) or not any(extend)):
            raise ValueError(f"extend must be four pixel counts (left, right, top, bottom) >= 0, not all 0; got "
                             f"{extend!r}")
        left, right, top, bottom = extend
        C, H, W = self.image_size
        if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != C:
            got = f"{image.dtype} {list(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image must be a uint8 tensor [C={C}, h, w], got {got}")
        h, w = image.shape[1:]
        if (h + top + bottom, w + left + right) != (H, W):
            raise ValueError(f"a {h}x{w} image extended by left {left}, right {right}, top {top}, bottom {bottom} is "
                             f"{h + top + bottom}x{w + left + right}; this model generates {H}x{W} images "
                             f"(extend by {H - h} rows and {W - w} columns in all)")
        canvas = torch.zeros((C, H, W), dtype=torch.uint8)
        canvas[:, top:top + h, left:left + w] = image
        mask = torch.ones((H, W), dtype=torch.bool)
        mask[top:top + h, left:left + w] = False
        return self.inpaint_image(canvas, mask, prompts, seeds=seeds, **kwargs)

    @torch.no_grad()
    def vary_image(self, image: Tensor, strength: float, prompts=None, *, seeds=None, negative_prompt=None,
                   num_steps: int | None = None, sampler=None, schedule=None, guidance_scale=None,
                   guidance_interval="model", sampler_options=None, schedule_options=None, cfg_rescale=None,
                   callback=None) -> Generation:
        """SDEdit variation of ``image`` (uint8 ``[C, H, W]``): strength 0 returns it unchanged, 1 ignores it (the
        same :func:`sonodiff.core.editing.sdedit_start` as :meth:`vary`)."""
        from sonodiff.core import sample
        from sonodiff.core.editing import sdedit_start

        self._check_image(image)
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        sp = self._sampling(num_steps, sampler, schedule, guidance_scale, guidance_interval, sampler_options,
                            schedule_options, cfg_rescale)
        rows, seeds = self._rows(prompts, 1, seeds)
        z = self._encode_image(image)
        if strength == 0:
            return Generation(None, None, tuple(seeds), tuple(rows), z.expand(len(rows), *z.shape[1:]).cpu(),
                              images=image[None].expand(len(rows), *image.shape).clone())
        D, cond = self._guided(rows, negative_prompt, sp, 0.0)
        gens = seed_generators(seeds)
        x, grid = sdedit_start(z.expand(len(rows), *z.shape[1:]).double(), self._grid(sp).to(self.device),
                               strength=strength, generator=gens)
        out = (sample(D, x, grid, sp["sampler"], cond=cond, generator=gens, callback=callback, **sp["sampler_options"])
               if len(grid) > 1 else x)
        return Generation(None, None, tuple(seeds), tuple(rows), out.float().cpu(),
                          images=self.codec.decode(out.float().cpu()))

    # ------------------------------------------------------------------ long-form
    @torch.no_grad()
    def stream(self, prompts=None, *, duration_s: float, num_per_prompt: int = 1, overlap: float = 0.25,
               negative_prompt=None, num_steps: int | None = None, sampler=None, schedule=None, guidance_scale=None,
               guidance_interval="model", sampler_options=None, schedule_options=None, cfg_rescale=None, seeds=None,
               callback=None) -> Iterator[Tensor]:
        """Long-form generation as a stream of audio chunks ``[B, C, t]`` (concatenated: ``duration_s``).

        Windows of :attr:`max_window_seconds` overlap by ``overlap`` of a window; each window is outpainted from
        the previous one's tail (its first frames are the previous window's last, kept by replacement), and
        consecutive chunks are joined with an equal-power crossfade over the overlap, so there is no click.
        Sampling settings as in :meth:`__call__`; a timing-conditioned model is told each window's offset
        (``seconds_start``) and the whole length (``seconds_total = duration_s``). ``callback(info)``: after every
        sampler step of every window (``info["window"]`` says which).
        """
        self._need("audio", "stream (long-form audio)")
        duration_s = self._check_duration(duration_s)
        if not 0.0 < overlap < 0.9:
            raise ValueError(f"overlap must be in (0, 0.9), got {overlap}")
        rows, seeds = self._rows(prompts, num_per_prompt, seeds)
        sp = self._sampling(num_steps, sampler, schedule, guidance_scale, guidance_interval, sampler_options,
                            schedule_options, cfg_rescale)
        W = self._frames(self.max_window_seconds)
        O = max(2, int(W * overlap))
        hop_s = self.codec.hop_samples / self.sample_rate
        total = int(round(duration_s * self.sample_rate))
        shape = self._feature_shape()
        cond, negative = self._conds(rows, negative_prompt, duration_s)
        emitted, prev_tail, k = 0, None, 0
        z_prev = None
        while emitted < total:
            win_seeds = [s * 1_000_003 + k for s in seeds]  # window k of sample s: independent of the batch
            cb = None if callback is None else (lambda info, k=k: callback({**info, "window": k}))
            if z_prev is None:
                z = generate_latents(self.model.denoiser, shape + (W,), win_seeds, cond=cond, negative=negative,
                                     device=self.device, max_rows=self.max_rows, guide=self._guide_denoiser(),
                                     callback=cb, **sp)
            else:
                x_known = torch.zeros((len(rows),) + shape + (W,), dtype=torch.float64, device=self.device)
                x_known[..., :O] = z_prev[..., -O:]
                mask = torch.zeros_like(x_known, dtype=torch.bool)
                mask[..., :O] = True
                z = self._edit_sample(x_known, mask, rows, win_seeds, negative_prompt, "replace", sp, duration_s,
                                      start_s=k * (W - O) * hop_s, callback=cb).float()
            audio = features_to_audio(self.codec, z.cpu(), length=int(round((W - 1) * hop_s * self.sample_rate)), vocoder=self.vocoder)
            ov = int(round((O - 1) * hop_s * self.sample_rate))
            if prev_tail is None:
                chunk, tail = audio[..., :-ov], audio[..., -ov:]
            else:
                joined = crossfade_join(prev_tail, audio, ov)
                chunk, tail = joined[..., :-ov], joined[..., -ov:]
            if emitted + chunk.shape[-1] >= total:
                chunk = torch.cat([chunk, tail], dim=-1)
            chunk = chunk[..., : total - emitted]
            emitted += chunk.shape[-1]
            prev_tail, z_prev, k = tail, z, k + 1
            yield chunk


def _short_path(path: str) -> str:
    """A shipped part by its name, anything else as given (no machine-specific absolute paths in sidecars)."""
    from sonodiff.models import MODELS_DIR

    p = Path(path)
    return p.name if p.parent == MODELS_DIR or MODELS_DIR in p.parents else str(path)


def _splice(orig: Tensor, gen: Tensor, a: int, b: int, fade: int) -> Tensor:
    """``orig [C, T]`` with ``[a, b)`` replaced by ``gen [C, T]``, equal-power crossfades of ``fade`` samples
    placed inside the edited span (so ``orig`` outside ``[a, b)`` is returned bit for bit)."""
    out = orig.clone()
    out[..., a:b] = gen[..., a:b]
    n = min(fade, (b - a) // 2)
    if n > 0:
        fo, fi = equal_power_fade(n, orig.device, orig.dtype)
        if a > 0:
            out[..., a:a + n] = orig[..., a:a + n] * fo + gen[..., a:a + n] * fi
        if b < orig.shape[-1]:
            out[..., b - n:b] = gen[..., b - n:b] * fo + orig[..., b - n:b] * fi
    return out
