"""The trainer reaches every part of the core it claims to: densities with a shift, timing conditioning
(crop start and item length from the data path), composed text + timing, and no global RNG."""

import math
from pathlib import Path

import pytest
import torch

from sonodiff.core.schedules import DENSITIES
from sonodiff.data.datasets import CachedDataset
from sonodiff.models.diffusion import frames_for_seconds
from sonodiff.training.build import build_model, needs_labels
from sonodiff.training.config import load_config, sampling_defaults
from sonodiff.training.data import PositionOrder
from sonodiff.training.logging import read_metrics
from sonodiff.training.loop import train
from sonodiff.training.tasks.diffusion import DiffusionTask
from sonodiff.utils.config import ConfigError
from tests.conditioning.conftest import tiny_text_dirs  # noqa: F401  (fixture: tiny T5 saved to a temp dir)

from .conftest import small_overrides

QUIET = lambda *a, **k: None  # noqa: E731

VP = {"uniform_discrete": ', beta_schedule = "linear"'}  # a VP density names its VP schedule


def _cfg(root, *extra, steps=3, batch=2):
    return load_config({}, small_overrides(root, run_steps=steps, batch=batch, extra=["data.prepare_workers=1",
                                                                                      "data.valid_split=",
                                                                                      "demo.steps=2", *extra]))


def _prepare_data(cfg, rank, log):
    task = DiffusionTask(cfg, Path("unused"), torch.device("cpu"), rank, 1, log)
    task.prepare()
    return task.feature_dir


def _make_batch(ds, order, positions, cfg, model, device):
    """The diffusion task's batch at ``positions`` with the given dataset, order and model."""
    task = DiffusionTask(cfg, Path("unused"), torch.device(device), 0, 1, QUIET)
    task.ds, task.order, task.model = ds, order, model
    return task.batch(positions)


@pytest.fixture(scope="module")
def tone_features(tones_dir):
    """The tones folder prepared into a feature cache once: (config, the train split as the trainer reads it)."""
    cfg = _cfg(tones_dir)
    fdir = _prepare_data(cfg, 0, QUIET)
    from sonodiff.audio.codecs import load_codec

    frames = frames_for_seconds(load_codec(fdir / "codec"), cfg.data.seconds)
    return fdir, CachedDataset(fdir, "train", frames, "random", pad="silence", in_memory=True)


# ------------------------------------------------------------------------------------------------ density shift
@pytest.mark.parametrize("name", sorted(DENSITIES))
def test_density_shift_reaches_the_trainer(name, tones_dir, tone_features):
    """density_options.shift used to collide with Preconditioned's own shift argument (TypeError at build)."""
    _, ds = tone_features
    plain = _cfg(tones_dir, f"model.density={name}", f"model.density_options={{{VP.get(name, '')[2:]}}}")
    shifted = _cfg(tones_dir, f"model.density={name}", f"model.density_options={{shift = 2.5{VP.get(name, '')}}}")
    model, _ = build_model(shifted, ds.shape)
    assert model.denoiser.shift == 2.5 and "shift" not in model.denoiser.density_params
    order = PositionOrder(len(ds), 0)
    _, s_plain, *_ = _make_batch(ds, order, range(4), plain, model, "cpu")
    _, s_shift, *_ = _make_batch(ds, order, range(4), shifted, model, "cpu")
    torch.testing.assert_close(s_shift, 2.5 * s_plain, rtol=1e-6, atol=0)
    # the denoiser's own draw (Preconditioned.loss without sigma) is shifted too
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    base, _ = build_model(plain, ds.shape)
    from sonodiff.core.schedules import sample_sigmas

    a = sample_sigmas(name, 8, shift=base.denoiser.shift, generator=g(), **base.denoiser.density_params)
    b = sample_sigmas(name, 8, shift=model.denoiser.shift, generator=g(), **model.denoiser.density_params)
    torch.testing.assert_close(b, 2.5 * a, rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad, msg", [
    ("{shift = 0.0}", r"model.density_options.*'lognormal'.*shift must be > 0, got 0"),
    ("{shift = -2}", r"shift must be > 0, got -2"),
    ('{shift = "big"}', r"model.density_options.*shift"),
    ("{shift = 2.0, mean = 0.5}", r"unknown parameter\(s\) \['mean'\]; it takes \['p_mean', 'p_std'\] and shift"),
])
def test_bad_density_options_are_clear_errors(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config({}, ["data.root=x", f"model.density_options={bad}"])


# ------------------------------------------------------------------------------------------------ timing
def test_timing_values_are_the_crop_start_and_the_item_length(tones_dir, tone_features):
    _, ds = tone_features
    cfg = _cfg(tones_dir, "conditioning.type=timing", "conditioning.options={dim = 16}")
    model, _ = build_model(cfg, ds.shape)
    hop_s = 64 / 8000
    starts = set()
    for p in range(12):
        order = PositionOrder(len(ds), cfg.train.seed)
        _, _, _, _, values, _ = _make_batch(ds, order, range(p, p + 1), cfg, model, "cpu")
        from sonodiff.training.data import example_generator

        ex = ds.example(order(p), example_generator(cfg.train.seed, p))
        assert values == [{"seconds_start": ex.start * hop_s, "seconds_total": ex.meta["duration_s"]}]
        assert ex.meta["duration_s"] == pytest.approx(0.5)
        starts.add(ex.start)
    assert len(starts) > 3  # random crops: the start really varies


def _train(cfg, run):
    return train(cfg, run, log=QUIET)


def _trains_and_generates(cfg, run, prompts=None, **kw):
    from sonodiff.pipelines import Pipeline
    from sonodiff.training.export import export_run

    res = _train(cfg, run)
    assert res.step == cfg.train.steps and all(math.isfinite(x) for x in res.losses)
    pipe = Pipeline.from_pretrained(export_run(run, run.parent / (run.name + "_model")))
    gen = pipe(prompts, num_steps=2, seeds=[0], duration_s=0.25, **kw)
    assert torch.isfinite(gen.audio).all()
    return pipe


def test_a_timing_recipe_trains_and_generates(tones_dir, tmp_path):
    cfg = _cfg(tones_dir, "conditioning.type=timing", "conditioning.options={dim = 16}")
    pipe = _trains_and_generates(cfg, tmp_path / "timing")
    assert pipe.is_conditional and not pipe.takes_prompt


def test_a_composed_text_and_timing_recipe_trains_and_generates(tones_dir, tmp_path, tiny_text_dirs):
    opts = (f'{{conditioners = {{text = {{type = "clap_text", path = "{tiny_text_dirs["clap_text"]}"}}, '
            f'timing = {{type = "timing", dim = 16}}}}}}')
    cfg = _cfg(tones_dir, "conditioning.type=composed", f"conditioning.options={opts}", "conditioning.field=caption",
               'demo.prompts=["a low tone"]')
    assert not needs_labels(cfg.conditioning)
    pipe = _trains_and_generates(cfg, tmp_path / "composed", ["a high tone"])
    assert pipe.takes_prompt


# ------------------------------------------------------------------------------------------------ no global RNG
def test_training_leaves_the_global_rng_alone_and_resume_with_dropout_is_bit_exact(tones_dir, tmp_path):
    fast = ["optim.warmup_steps=0", "optim.lr=5e-3", "train.log_every=1"]  # weights move enough for dropout to show
    drop = ["model.options={dropout = 0.3}", "train.checkpoint_every=2", *fast]
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    train(_cfg(tones_dir, *drop, steps=4), tmp_path / "full", log=QUIET)
    assert torch.equal(torch.get_rng_state(), state), "train() changed the caller's global RNG"
    # the same run in two calls (resumed from its step-2 checkpoint) gives the same losses bit for bit
    train(_cfg(tones_dir, *drop, steps=2), tmp_path / "split", log=QUIET)
    torch.manual_seed(999)  # whatever the caller's RNG holds does not matter
    train(_cfg(tones_dir, *drop, steps=4), tmp_path / "split", log=QUIET)
    full = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "full")}
    split = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "split")}
    assert sorted(full) == sorted(split) == [1, 2, 3, 4]
    assert [full[s] for s in full] == [split[s] for s in full]
    # dropout is really on and seeded per step: without it the losses differ
    # (the layers after dropout and the output layer start at zero, so only losses from step 3 on can differ)
    train(_cfg(tones_dir, *fast, steps=4), tmp_path / "nodrop", log=QUIET)
    nodrop = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "nodrop")}
    assert nodrop[4] != full[4]


# ------------------------------------------------------------------------------------------------ recipe -> export
def test_demo_sampling_settings_become_the_exported_defaults(tones_dir):
    cfg = _cfg(tones_dir, "demo.sampler=ddim", "demo.sampler_options={eta = 0.5}", "demo.schedule=flow",
               "demo.schedule_options={shift = 3.0}", "demo.cfg_rescale=0.7")
    s = sampling_defaults(cfg.to_dict())
    assert s["sampler"] == "ddim" and s["sampler_options"] == {"eta": 0.5}
    assert s["schedule"] == "flow" and s["schedule_options"] == {"shift": 3.0} and s["cfg_rescale"] == 0.7
    assert (s["sigma_min"], s["sigma_max"]) == (cfg.model.sigma_min, cfg.model.sigma_max)
