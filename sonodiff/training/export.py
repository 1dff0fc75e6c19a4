"""`sonodiff export RUN_DIR --out MODEL_DIR`: the inference directory of a training run (EMA weights).

With ``--ema-sigma-rel S`` (runs trained with ``train.posthoc_ema``) the weights are instead the post-hoc EMA of
length S (Karras et al. 2024), reconstructed from the run's snapshots (:mod:`sonodiff.training.posthoc_ema`);
``source.ema`` in config.json records the reconstruction.

Everything generation reads comes from the run's config (:func:`model_sections`): a re-export of the same run
writes the same ``config.json``, with no hand edits. Nothing machine-specific is recorded: the run directory
and the dataset are named by their folder names, never by absolute paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["export_run", "model_sections"]


def model_sections(config: dict, codec) -> dict[str, dict]:
    """The ``sampling`` and ``audio`` (or, for an image codec, ``image``) sections of an exported model's
    config.json, from a run's resolved config (``Config.to_dict()``) and its fitted codec: every default
    :class:`sonodiff.pipelines.Pipeline` generates with (sampler and its options, grid and its options, steps,
    guidance scale, interval and rescale, noise range; audio: training length and the longest one-pass window;
    image: channels, height and width)."""
    from sonodiff.models.diffusion import frames_for_seconds
    from sonodiff.training.config import sampling_defaults

    if codec.modality == "image":
        if codec.size is None:
            raise ValueError("an image model needs a fixed size: codec.options height and width")
        return {"sampling": sampling_defaults(config),
                "image": {"codec": codec.name, "channels": codec.channels, "height": codec.size[0],
                          "width": codec.size[1]}}
    seconds = config["data"]["seconds"]
    window = config["demo"].get("max_window_seconds") or seconds
    if window < seconds:
        raise ValueError(f"demo.max_window_seconds={window} is shorter than the training length data.seconds={seconds}")
    return {
        "sampling": sampling_defaults(config),
        "audio": {"sample_rate": codec.sample_rate, "seconds": seconds, "frames": frames_for_seconds(codec, seconds),
                  "codec": codec.name, "vocoder": config["demo"].get("vocoder", "griffin_lim")
                  if codec.mel_config is not None else "none",
                  "max_window_seconds": window},
    }


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str = "latest",
               ema_sigma_rel: float | None = None, guide: str | None = None,
               guidance_scale: float | None = None, vocoder: str | None = None) -> Path:
    """Export a run's EMA weights (``checkpoint``: "latest", "best" or a folder name such as step_00001000).

    ``ema_sigma_rel``: export the post-hoc EMA with that sigma_rel instead, reconstructed from the run's snapshots
    up to the checkpoint's step (at the last snapshot at or before it); ``source.ema`` then records
    ``{"kind": "posthoc", "sigma_rel", "gamma", "at_step", "profile_error", "snapshots", "coefficients"}``.
    ``guide``: a checkpoint of the run whose EMA weights become the autoguidance model (``OUT/guide``, stored as
    ``demo.guide_dtype``); None = the run's ``demo.guide``, "" = none. ``guidance_scale``: the exported default
    guidance weight instead of ``demo.guidance_scale``. ``vocoder``: the exported ``audio.vocoder`` instead of
    ``demo.vocoder`` (checked against the codec). Export-time choices are recorded in ``source``.
    """
    from sonodiff.audio.codecs import load_codec
    from sonodiff.models.model_dir import save_model_dir
    from sonodiff.training.checkpoint import latest_checkpoint, load_checkpoint

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {run_dir} is not a sonodiff training run")
    run = json.loads(cfg_path.read_text())
    root = run_dir / "checkpoints"
    ckpt = latest_checkpoint(root) if checkpoint == "latest" else root / checkpoint
    if ckpt is None or not (ckpt / "meta.json").is_file():
        raise FileNotFoundError(f"no complete checkpoint {checkpoint!r} in {root}")
    _, ema_state, _, meta = load_checkpoint(ckpt)
    c = run["config"]
    if c.get("task", "diffusion") == "vocoder":
        return _export_vocoder(run, run_dir, ckpt, meta, ema_state, out, ema_sigma_rel)
    if c.get("task", "diffusion") == "contrastive":
        return _export_clap(run, run_dir, ckpt, meta, ema_state, out, ema_sigma_rel)
    if c.get("task", "diffusion") == "autoencoder":
        return _export_autoencoder(run, run_dir, ckpt, meta, ema_state, out, ema_sigma_rel)
    # the run's own fitted codec (runs started before runs kept one: the feature cache's, as they were trained)
    codec = load_codec(run_dir / "codec" if (run_dir / "codec" / "config.json").is_file()
                       else Path(run["feature_dir"]) / "codec")
    source, state = _source_and_weights(run, run_dir, ckpt, meta, ema_state, ema_sigma_rel)
    sections = model_sections(c, codec)
    if guidance_scale is not None:
        if not guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        sections["sampling"]["guidance_scale"] = float(guidance_scale)
        source["export_guidance_scale"] = float(guidance_scale)
    if vocoder is not None:
        from sonodiff.models.vocoders import load_vocoder

        if codec.mel_config is None:  # waveform and image models
            raise ValueError(f"a {codec.name!r} model takes no vocoder (got vocoder={vocoder!r})")
        load_vocoder(vocoder, expect=codec.mel_config)  # refuses a vocoder of other mel settings, naming both
        sections["audio"]["vocoder"] = vocoder
        source["export_vocoder"] = vocoder
    run_guide = c["demo"].get("guide", "")
    guide = run_guide if guide is None else guide
    if guide != run_guide:
        source["export_guide"] = guide
    out = Path(out)
    if guide:
        gck = root / guide
        if not (gck / "meta.json").is_file():
            raise FileNotFoundError(f"guide checkpoint {guide!r} is not a complete checkpoint in {root}")
        _, g_state, _, g_meta = load_checkpoint(gck)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[c["demo"].get("guide_dtype", "bfloat16")]
        g_state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in g_state.items()}
        save_model_dir(out / "guide", model_state=g_state, spec=run["model"], codec=codec,
                       **{k: {kk: vv for kk, vv in v.items() if kk != "guide"} if k == "sampling" else v
                          for k, v in sections.items()},
                       source={**source, "checkpoint": gck.name, "step": g_meta["step"],
                               "samples": g_meta.get("samples"), "role": "autoguidance guide",
                               "dtype": str(dtype).replace("torch.", "")})
        sections["sampling"]["guide"] = "guide"
        source["guide"] = {"checkpoint": gck.name, "step": g_meta["step"]}
    else:
        sections["sampling"].pop("guide", None)
        if (out / "guide").is_dir():  # a guide of an earlier export would be picked up by nothing, but mislead
            import shutil

            shutil.rmtree(out / "guide")
    return save_model_dir(
        out,
        model_state=state,
        spec=run["model"],
        codec=codec,
        **sections,
        source=source,
    )


def _export_clap(run: dict, run_dir: Path, ckpt: Path, meta: dict, ema_state: dict, out, ema_sigma_rel) -> Path:
    """A contrastive run's CLAP model directory (:func:`sonodiff.eval.clap.save_clap_dir`): the EMA weights."""
    from sonodiff.eval.clap import ClapConfig, save_clap_dir

    c, spec = run["config"], run["model"]
    source, state = _source_and_weights(run, run_dir, ckpt, meta, ema_state, ema_sigma_rel, task="contrastive",
                                        text_field=c["contrastive"]["text_field"])
    return save_clap_dir(out, config=ClapConfig.from_dict(spec["config"]), state=state, source=source)


def _export_autoencoder(run: dict, run_dir: Path, ckpt: Path, meta: dict, ema_state: dict, out,
                        ema_sigma_rel) -> Path:
    """An autoencoder run's model directory: config.json (kind "autoencoder"), the EMA weights in
    model.safetensors and codec/ (the run's fitted mel codec): what the ``latent`` codec loads."""
    from sonodiff.audio.codecs import load_codec, save_autoencoder_dir

    c, spec = run["config"], run["model"]
    source, state = _source_and_weights(run, run_dir, ckpt, meta, ema_state, ema_sigma_rel, task="autoencoder",
                                        kl_weight=c["autoencoder"]["kl_weight"])
    return save_autoencoder_dir(out, config=spec["config"], state=state, mel=load_codec(run_dir / "codec"),
                                source=source)


def _export_vocoder(run: dict, run_dir: Path, ckpt: Path, meta: dict, ema_state: dict, out, ema_sigma_rel) -> Path:
    """A vocoder run's model directory (:func:`sonodiff.models.vocoders.save_vocoder_dir`): the generator's EMA."""
    from sonodiff.audio.neural_vocoder import NeuralVocoderConfig
    from sonodiff.models.vocoders import save_vocoder_dir

    spec = run["model"]
    source, state = _source_and_weights(run, run_dir, ckpt, meta, ema_state, ema_sigma_rel, task="vocoder")
    gcfg = NeuralVocoderConfig.from_dict(spec["config"])
    return save_vocoder_dir(out, kind="neural", mel=gcfg.mel_config(), config=spec["config"], state=state,
                            source=source)


def _source_and_weights(run: dict, run_dir: Path, ckpt: Path, meta: dict, ema_state: dict, ema_sigma_rel,
                        task: str | None = None, **extra) -> tuple[dict, dict]:
    """Every export's provenance (``source`` in config.json: run, task, checkpoint, step, samples, data; plus
    ``extra``) and the weights it stores: the checkpoint's EMA, or the post-hoc EMA of length ``ema_sigma_rel``."""
    c = run["config"]
    source = {"name": c["name"], **({"task": task} if task else {}), "run_dir": run_dir.resolve().name, "checkpoint": ckpt.name, "step": meta["step"],
              "samples": meta.get("samples"), "train_seconds": meta.get("train_seconds"),
              "data_root": Path(c["data"]["root"]).name, "layout": c["data"]["layout"], **extra}
    state = ema_state
    if ema_sigma_rel is not None:
        state, source["ema"] = _posthoc_weights(run_dir, int(meta["step"]), ema_sigma_rel, ema_state)
    return source, state


def _posthoc_weights(run_dir: Path, step: int, sigma_rel: float, ema_state: dict) -> tuple[dict, dict]:
    """(weights, record) of the post-hoc EMA ``sigma_rel`` from RUN_DIR/posthoc_ema snapshots up to ``step``."""
    from sonodiff.training.posthoc_ema import list_snapshots, profile_error, reconstruct, sigma_rel_to_gamma

    gamma = sigma_rel_to_gamma(sigma_rel)  # a bad value fails before any file is read
    snaps = list_snapshots(run_dir / "posthoc_ema", max_step=step)
    if not snaps:
        raise FileNotFoundError(f"{run_dir} has no post-hoc EMA snapshots up to step {step} in {run_dir / 'posthoc_ema'}: "
                                "train with train.posthoc_ema (e.g. [0.05, 0.10]) and train.posthoc_ema_every > 0 to "
                                "store them, or export without --ema-sigma-rel (the run's EMA)")
    state, coeffs = reconstruct(snaps, sigma_rel)
    if set(state) != set(ema_state):
        raise ValueError(f"the post-hoc EMA snapshots in {run_dir / 'posthoc_ema'} hold other tensors than the "
                         f"checkpoint's model (differing keys: {sorted(set(state) ^ set(ema_state))[:5]})")
    at = max(s.step for s in snaps)
    err = profile_error([s.gamma for s in snaps], [s.step for s in snaps], coeffs, gamma, at)
    record = {"kind": "posthoc", "sigma_rel": float(sigma_rel), "gamma": gamma, "at_step": at,
              "profile_error": err, "snapshots": [{"sigma_rel": s.sigma_rel, "step": s.step} for s in snaps],
              "coefficients": coeffs.tolist()}
    return state, record
