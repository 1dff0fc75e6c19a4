import pytest
import torch


def make_model_dir(path, conditioning="class_label", seed=0):
    """A tiny exported model (random U-Net weights, fitted mel codec): real files through the real loaders."""
    from sonodiff.audio.codecs import make_codec
    from sonodiff.core.denoiser import Preconditioned
    from sonodiff.models.diffusion import DiffusionModel
    from sonodiff.models.model_dir import save_model_dir
    from sonodiff.nn import build_network, unet_config
    from sonodiff.training.build import build_conditioner
    from sonodiff.training.config import ConditioningConfig

    torch.manual_seed(seed)
    codec = make_codec("mel", sample_rate=8000, n_fft=256, hop_length=64, n_mels=16)
    t = torch.arange(8000) / 8000
    audio = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (300.0, 700.0, 1100.0)])[:, None]
    codec.fit([codec.analyze(audio)])
    if conditioning == "class_label":
        cc = ConditioningConfig(type="class_label", field="label", options={"dim": 32})
        conditioner, cspec = build_conditioner(cc, ["high", "low"])
    else:
        conditioner, cspec = None, {"type": "none"}
    cfg = unet_config("tiny-2d", in_channels=1, out_channels=1, channels=(16, 32), groups=8, head_dim=16,
                      pooled_dim=conditioner.pooled_dim if conditioner is not None else 0)
    net = build_network("unet", cfg)
    # random, non-zero output layer so that outputs depend on inputs (the default init is zero)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    model = DiffusionModel(Preconditioned(net, "edm", sigma_data=1.0), conditioner)
    spec = {"network": "unet", "network_config": cfg.to_dict(), "param": "edm", "sigma_data": 1.0, "conditioning": cspec}
    save_model_dir(path, model_state=model.state_dict(), spec=spec, codec=codec,
                   sampling={"sampler": "euler", "schedule": "karras", "num_steps": 6, "guidance_scale": 2.0,
                             "sigma_min": 0.01, "sigma_max": 20.0},
                   audio={"sample_rate": 8000, "seconds": 0.5, "frames": 63, "codec": "mel", "vocoder": "griffin_lim"},
                   source={"name": "tiny_test", "step": 0})
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("m") / "tiny_labels")


@pytest.fixture(scope="session")
def tiny_uncond_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("m") / "tiny_uncond", conditioning="none")


@pytest.fixture()
def tone():
    t = torch.arange(4000) / 8000
    return (0.4 * torch.sin(2 * torch.pi * 500 * t))[None]
