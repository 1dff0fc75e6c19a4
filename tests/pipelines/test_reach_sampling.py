"""Every part of the sampling core is settable from Pipeline.__call__ (and the editing methods), the CLI and the
model's config: sampler options, every sigma grid with its options, guidance rescale, timing conditioning."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sonodiff.core import SCHEDULES
from sonodiff.core.cond import Cond
from sonodiff.core.guidance import cfg_combine
from sonodiff.core.schedules import model_sigmas
from sonodiff.pipelines import Pipeline
from sonodiff.pipelines.sampling import guided_denoiser

REPO = Path(__file__).resolve().parents[2]
FAST = {"num_steps": 4, "seeds": [0]}


def _features(pipe, prompts=("low",), **kw):
    return pipe(list(prompts) if prompts else None, **{**FAST, **kw}).features


# ------------------------------------------------------------------------------------------------ sampler options
def test_sampler_options_reach_the_sampler(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    ddim0 = _features(pipe, sampler="ddim", sampler_options={"eta": 0.0})
    ddim1 = _features(pipe, sampler="ddim", sampler_options={"eta": 1.0})
    assert not torch.allclose(ddim0, ddim1)
    # DDIM with eta = 0 is Euler on the VE ODE (Karras et al. 2022, Sec. 3): the option really set eta
    torch.testing.assert_close(ddim0, _features(pipe, sampler="euler"), rtol=1e-4, atol=1e-4)
    heun = _features(pipe, sampler="heun")
    churn = _features(pipe, sampler="heun", sampler_options={"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0})
    assert not torch.allclose(heun, churn)
    lpc = [_features(pipe, sampler="langevin_pc", sampler_options={"snr": snr, "predictor": "heun"}) for snr in (0.05, 0.3)]
    assert not torch.allclose(*lpc)


@pytest.mark.parametrize("sampler, options, msg", [
    ("euler", {"eta": 0.5}, r"sampler 'euler' has no option\(s\) \['eta'\]; its options are \[\]"),
    ("ddim", {"etta": 0.5}, r"sampler 'ddim' has no option\(s\) \['etta'\]; its options are \['eta', 'noise_sampler', "
                            r"'s_noise'\]"),
    ("langevin_pc", {"snr": 0.1, "corrector": 2}, r"'langevin_pc' has no option\(s\) \['corrector'\].*'n_corrector'"),
    ("ddim", [("eta", 1.0)], r"sampler_options must be a dict"),
])
def test_an_unknown_sampler_option_is_a_clear_error(tiny_model_dir, sampler, options, msg):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match=msg):
        pipe(["low"], sampler=sampler, sampler_options=options, **FAST)


def test_editing_methods_take_sampler_options(tiny_model_dir, tone):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    kw = {"sampler": "ddim", "num_steps": 4, "seeds": [0]}
    a = pipe.inpaint(tone, 8000, 0.1, 0.3, ["low"], sampler_options={"eta": 0.0}, **kw).audio
    b = pipe.inpaint(tone, 8000, 0.1, 0.3, ["low"], sampler_options={"eta": 1.0}, **kw).audio
    assert not torch.allclose(a, b)
    v0 = pipe.vary(tone, 8000, 0.6, ["low"], sampler_options={"eta": 0.0}, **kw).features
    v1 = pipe.vary(tone, 8000, 0.6, ["low"], sampler_options={"eta": 1.0}, **kw).features
    assert not torch.allclose(v0, v1)
    with pytest.raises(ValueError, match=r"sampler 'ddim' has no option\(s\) \['etta'\]"):
        pipe.continue_audio(tone, 8000, 0.8, ["low"], sampler_options={"etta": 1.0}, **kw)
    with pytest.raises(ValueError, match="repaint.*sampler_options"):
        pipe.inpaint(tone, 8000, 0.1, 0.3, ["low"], method="repaint", sampler_options={"eta": 1.0}, **kw)


def _with_sampling(src, dst, **sampling):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["sampling"].update(sampling)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_the_model_config_supplies_sampling_defaults(tiny_model_dir, tmp_path):
    own = Pipeline.from_pretrained(_with_sampling(tiny_model_dir, tmp_path / "m", sampler="ddim",
                                                  sampler_options={"eta": 1.0}, schedule="karras",
                                                  schedule_options={"rho": 3.0}, cfg_rescale=0.5))
    plain = Pipeline.from_pretrained(tiny_model_dir)
    explicit = _features(plain, sampler="ddim", sampler_options={"eta": 1.0}, schedule_options={"rho": 3.0},
                         cfg_rescale=0.5)
    torch.testing.assert_close(_features(own), explicit)
    # given options override the model's key by key; another sampler or grid does not inherit them
    torch.testing.assert_close(_features(own, sampler_options={"eta": 0.0}),
                               _features(plain, sampler="ddim", sampler_options={"eta": 0.0},
                                         schedule_options={"rho": 3.0}, cfg_rescale=0.5))
    torch.testing.assert_close(_features(own, sampler="euler", schedule="exponential", cfg_rescale=0.0),
                               _features(plain, sampler="euler", schedule="exponential"))


# ------------------------------------------------------------------------------------------------ guidance rescale
def test_cfg_rescale_is_lin_et_al_in_x0_space():
    """guided_denoiser(cfg_rescale=phi) = phi * x_cfg std(x_c)/std(x_cfg) + (1 - phi) x_cfg, per example."""
    g = torch.Generator().manual_seed(0)
    w_c, w_u = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)

    def den(x, sigma, cond):  # conditional rows use w_c, null rows w_u: two different linear denoisers
        null = cond.null_mask(x.shape[0])[:, None, None]
        return torch.where(null, x * w_u, x * w_c + 1.0) / (1 + sigma[:, None, None] ** 2)

    x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.7, 4.0], dtype=torch.float64)
    cond = Cond(pooled=torch.zeros(2, 4, dtype=torch.float64))
    d_c, d_u = den(x, sigma, cond), den(x, sigma, cond.null_all())
    x_cfg = d_u + 3.0 * (d_c - d_u)
    for phi in (0.0, 0.4, 1.0):
        std_c, std_cfg = d_c.std(dim=(1, 2), keepdim=True), x_cfg.std(dim=(1, 2), keepdim=True)
        want = phi * x_cfg * std_c / std_cfg + (1 - phi) * x_cfg
        got = guided_denoiser(den, cond, guidance_scale=3.0, cfg_rescale=phi)(x, sigma, cond)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cfg_combine(d_c, d_u, 3.0), x_cfg)


def test_cfg_rescale_reaches_the_pipeline(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    base = _features(pipe, guidance_scale=4.0)
    torch.testing.assert_close(_features(pipe, guidance_scale=4.0, cfg_rescale=0.0), base)
    assert not torch.allclose(_features(pipe, guidance_scale=4.0, cfg_rescale=0.7), base)
    for bad in (1.5, -0.1, "0.5", True):
        with pytest.raises(ValueError, match=r"cfg_rescale .*\[0, 1\]"):
            pipe(["low"], cfg_rescale=bad, **FAST)


# ------------------------------------------------------------------------------------------------ every grid
GRIDS = {  # schedule -> options (VP spacings name the VP schedule they space; flow takes its shift)
    "karras": {"rho": 5.0},
    "exponential": {},
    "logsnr": {},
    "linspace": {"beta_schedule": "linear"},
    "leading": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1},
    "trailing": {"beta_schedule": "cosine"},
    "flow": {"shift": 3.0},
}


def test_every_grid_has_a_case():
    assert set(GRIDS) == set(SCHEDULES)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_grid_reaches_the_sampler(tiny_uncond_dir, name):
    pipe = Pipeline.from_pretrained(tiny_uncond_dir)
    s = pipe.config["sampling"]
    seen = []
    z = pipe(None, schedule=name, schedule_options=GRIDS[name], callback=lambda i: seen.append(i["sigma"]),
             **FAST).features
    want = model_sigmas(name, 4, s["sigma_min"], s["sigma_max"], **GRIDS[name])
    assert seen == want[:-1].tolist() and torch.isfinite(z).all()


def test_grid_options_change_the_grid_and_bad_ones_are_clear_errors(tiny_uncond_dir):
    pipe = Pipeline.from_pretrained(tiny_uncond_dir)
    rho = {}
    for r in (3.0, 7.0):
        seen = []
        pipe(None, schedule="karras", schedule_options={"rho": r}, callback=lambda i: seen.append(i["sigma"]), **FAST)
        rho[r] = seen
    assert rho[3.0][0] == rho[7.0][0] and rho[3.0][1:] != rho[7.0][1:]
    with pytest.raises(ValueError, match=r"unknown schedule 'cosine'; valid names: \['exponential', 'flow'"):
        pipe(None, schedule="cosine", **FAST)
    with pytest.raises(ValueError, match=r"schedule 'karras'.*unknown argument\(s\) \['shift'\]; it takes "
                                         r"\['sigma_min', 'sigma_max', 'rho'\]"):
        pipe(None, schedule_options={"shift": 3.0}, **FAST)
    with pytest.raises(ValueError, match=r"schedule 'linspace'.*beta_schedule"):
        pipe(None, schedule="linspace", **FAST)


# ------------------------------------------------------------------------------------------------ timing models
def _timing_model_dir(path):
    from sonodiff.audio.codecs import make_codec
    from sonodiff.core.denoiser import Preconditioned
    from sonodiff.models.diffusion import DiffusionModel
    from sonodiff.models.model_dir import save_model_dir
    from sonodiff.nn import build_network, unet_config
    from sonodiff.training.build import build_conditioner
    from sonodiff.training.config import ConditioningConfig

    torch.manual_seed(0)  # test-side init of a throwaway model
    codec = make_codec("mel", sample_rate=8000, n_fft=256, hop_length=64, n_mels=16)
    t = torch.arange(8000) / 8000
    codec.fit([codec.analyze(torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (300.0, 900.0)])[:, None])])
    conditioner, cspec = build_conditioner(ConditioningConfig(type="timing", options={"dim": 16}), None)
    cfg = unet_config("tiny-2d", in_channels=1, out_channels=1, channels=(16, 32), groups=8, head_dim=16,
                      token_dim=conditioner.token_dim, pooled_dim=conditioner.pooled_dim)
    model = DiffusionModel(Preconditioned(build_network("unet", cfg), "edm", sigma_data=1.0), conditioner)
    spec = {"network": "unet", "network_config": cfg.to_dict(), "param": "edm", "sigma_data": 1.0, "conditioning": cspec}
    return save_model_dir(path, model_state=model.state_dict(), spec=spec, codec=codec,
                          sampling={"sampler": "euler", "schedule": "karras", "num_steps": 4, "guidance_scale": 2.0,
                                    "sigma_min": 0.01, "sigma_max": 20.0},
                          audio={"sample_rate": 8000, "seconds": 0.5, "frames": 63, "codec": "mel",
                                 "vocoder": "griffin_lim"},
                          source={"name": "tiny_timing", "step": 0})


def test_a_timing_model_is_told_the_duration_and_each_windows_start(tmp_path):
    pipe = Pipeline.from_pretrained(_timing_model_dir(tmp_path / "timing"))
    assert pipe.is_conditional and not pipe.takes_prompt
    seen = []
    c = pipe.model.conditioner
    h = c.register_forward_pre_hook(lambda m, args: seen.append(
        (args[0]["seconds_start"].tolist(), args[0]["seconds_total"].tolist())))
    gen = pipe(None, duration_s=0.4, **FAST)
    assert torch.isfinite(gen.audio).all() and seen[0] == ([0.0], [pytest.approx(0.4)])
    seen.clear()
    chunks = list(pipe.stream(duration_s=1.2, **FAST))
    h.remove()
    assert sum(ch.shape[-1] for ch in chunks) == 9600
    starts = sorted({s[0][0] for s in seen})
    assert starts[0] == 0.0 and len(starts) >= 2 and all(t == [pytest.approx(1.2)] for _, t in seen)
    with pytest.raises(ValueError, match="takes no prompt"):
        pipe(["a dog"], **FAST)
    with pytest.raises(ValueError, match="negative_prompt needs a model that takes prompts"):
        pipe(None, negative_prompt="noise", **FAST)


# ------------------------------------------------------------------------------------------------ the CLI
def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "sonodiff", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_reaches_sampler_options_grids_and_rescale(tiny_model_dir, tmp_path):
    m = str(tiny_model_dir)
    r = _cli("generate", "low", "--model", m, "--steps", "3", "--sampler", "ddim", "--sampler-opt", "eta=0.5",
             "--sampler-opt", "s_noise=0.9", "--schedule", "flow", "--schedule-opt", "shift=3", "--cfg-rescale", "0.3",
             "--out", "a.wav", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["sampler"] == "ddim" and side["sampler_options"] == {"eta": 0.5, "s_noise": 0.9}
    assert side["schedule"] == "flow" and side["schedule_options"] == {"shift": 3} and side["cfg_rescale"] == 0.3
    for args, msg in ((["--sampler-opt", "etta=1"], "sampler 'euler' has no option(s) ['etta']"),
                      (["--sampler-opt", "eta"], "--sampler-opt 'eta': must look like KEY=VALUE"),
                      (["--schedule-opt", "shift=2"], "unknown argument(s) ['shift']"),
                      (["--cfg-rescale", "2"], "cfg_rescale (guidance rescale phi")):
        r = _cli("generate", "low", "--model", m, *args, "--out", "b.wav", cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (tmp_path / "b.wav").exists()
