"""Post-hoc EMA (Karras et al. 2024, EDM2): the gamma <-> sigma_rel pair, the power-function average, the least-squares
reconstruction from snapshots, and the trainer / export integration (snapshots, exact resume, exported model)."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from sonodiff.training.config import TrainConfig, load_config
from sonodiff.training.posthoc_ema import (
    GAMMA_MIN,
    SIGMA_REL_MAX,
    PowerEMA,
    gamma_to_sigma_rel,
    list_snapshots,
    profile_error,
    reconstruct,
    save_snapshot,
    sigma_rel_to_gamma,
    solve_coefficients,
)

from .conftest import small_overrides

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny_debug.toml"


# ----------------------------------------------------------------------------------------------- gamma <-> sigma_rel
def test_gamma_and_sigma_rel_are_an_exact_inverse_pair():
    for s in (1e-3, 0.01, 0.05, 0.07, 0.10, 0.2, 0.29, SIGMA_REL_MAX):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(s)) == pytest.approx(s, rel=1e-14, abs=0)
    for g in (GAMMA_MIN + 0.05, 0.0, 1.0, 6.94, 16.97, 100.0, 1e4):
        assert sigma_rel_to_gamma(gamma_to_sigma_rel(g)) == pytest.approx(g, rel=1e-12, abs=1e-12)
    # the values quoted in EDM2 (Section 3): sigma_rel 0.05 and 0.10 are gamma 16.97 and 6.94
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=5e-3)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=5e-3)
    assert gamma_to_sigma_rel(0.0) == pytest.approx(1 / math.sqrt(12))  # gamma 0: the uniform average


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.31, float("nan"), float("inf"), True, "0.1"])
def test_sigma_rel_out_of_range_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"sigma_rel="):
        sigma_rel_to_gamma(bad)


def test_gamma_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match=r"gamma=-0.5 is out of range"):
        gamma_to_sigma_rel(-0.5)
    with pytest.raises(ValueError, match=r"gamma=nan"):
        gamma_to_sigma_rel(float("nan"))


@pytest.mark.parametrize("sigma_rel", [0.05, 0.10, 0.2])
def test_power_function_profile_has_the_stated_sigma_rel(sigma_rel):
    """Integrate p(tau) = (gamma + 1) tau^gamma on [0, 1] numerically: unit mass, standard deviation sigma_rel."""
    from scipy.integrate import quad

    g = sigma_rel_to_gamma(sigma_rel)
    p = lambda tau: (g + 1) * tau**g
    mass = quad(p, 0, 1, epsabs=0, epsrel=1e-13)[0]
    mean = quad(lambda tau: tau * p(tau), 0, 1, epsabs=0, epsrel=1e-13)[0]
    second = quad(lambda tau: tau * tau * p(tau), 0, 1, epsabs=0, epsrel=1e-13)[0]
    assert mass == pytest.approx(1.0, rel=1e-12)
    assert math.sqrt(second - mean**2) == pytest.approx(sigma_rel, rel=1e-9)
    # the discrete EMA's weights over steps 1..t (PowerEMA below) have the same relative width for large t
    t = 20000
    tau = torch.arange(1, t + 1, dtype=torch.float64)
    w = (tau ** (g + 1) - (tau - 1) ** (g + 1)) / t ** (g + 1)
    m = (w * tau).sum()
    assert float(w.sum()) == pytest.approx(1.0, rel=1e-12)
    assert float(((w * (tau - m) ** 2).sum()).sqrt() / t) == pytest.approx(sigma_rel, rel=1e-3)


# ----------------------------------------------------------------------------------------------- PowerEMA
class _Tiny(nn.Module):
    def __init__(self, d=1, dtype=torch.float64):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d, dtype=dtype))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def _run(ema, model, values, start=1):
    for t, v in enumerate(values, start):
        with torch.no_grad():
            model.w.copy_(v)
            model.count += 1
        ema.update(model, t)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.10, 0.25])
def test_power_ema_is_the_explicit_power_weighted_average(sigma_rel):
    """beta_t = (1 - 1/t)^(gamma+1) telescopes: after T steps step tau has the weight
    (tau^(gamma+1) - (tau-1)^(gamma+1)) / T^(gamma+1) = integral over (tau-1, tau] of (gamma+1) s^gamma / T^(gamma+1),
    i.e. weights proportional to tau^gamma in the continuous sense (and exactly so for gamma = 0, tested below)."""
    g = torch.Generator().manual_seed(1)
    values = torch.randn(300, 1, generator=g, dtype=torch.float64) + torch.linspace(0, 3, 300, dtype=torch.float64)[:, None]
    model = _Tiny()
    ema = PowerEMA(model, sigma_rel, dtype=torch.float64)
    gamma = ema.gamma
    for T in (1, 2, 17, 300):
        e = PowerEMA(model, sigma_rel, dtype=torch.float64)
        _run(e, model, values[:T])
        tau = torch.arange(1, T + 1, dtype=torch.float64)
        w = (tau ** (gamma + 1) - (tau - 1) ** (gamma + 1)) / float(T) ** (gamma + 1)
        expected = (w[:, None] * values[:T]).sum(0)
        torch.testing.assert_close(e.model.w.detach(), expected, rtol=1e-12, atol=1e-13)
        assert int(e.model.count) == int(model.count)  # buffers are copied, not averaged
    # gamma = 0 is the plain running mean
    uniform = PowerEMA(model, gamma_to_sigma_rel(0.0), dtype=torch.float64)
    _run(uniform, model, values)
    torch.testing.assert_close(uniform.model.w.detach(), values.mean(0), rtol=1e-12, atol=1e-13)
    assert ema.beta(1) == 0.0  # the first step replaces the initial copy entirely


def test_power_ema_state_dict_resumes_bit_exactly_and_checks_the_step():
    g = torch.Generator().manual_seed(2)
    values = torch.randn(40, 8, generator=g)
    model = _Tiny(8, torch.float32)
    full = PowerEMA(model, 0.1)
    _run(full, model, values)
    first = PowerEMA(model, 0.1)
    _run(first, model, values[:23])
    state = first.state_dict()
    again = PowerEMA(_Tiny(8, torch.float32), 0.1)
    again.load_state_dict(state)
    _run(again, model, values[23:], start=24)
    assert torch.equal(again.model.w, full.model.w) and again.t == 40
    assert again.model.w.dtype == torch.float32
    with pytest.raises(ValueError, match="next update is step 41, got step 43"):
        again.update(model, 43)
    with pytest.raises(ValueError, match="sigma_rel=0.05"):
        PowerEMA(model, 0.05).load_state_dict(state)


# ----------------------------------------------------------------------------------------------- reconstruction
def _trajectory(T, d, seed=0):
    """A drifting noisy parameter trajectory [T, d] like SGD's: log-time drift, an oscillation, a random walk."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(1, T + 1, dtype=torch.float64)[:, None]
    drift = torch.randn(1, d, generator=g, dtype=torch.float64)
    walk = torch.cumsum(torch.randn(T, d, generator=g, dtype=torch.float64), 0) * 0.05
    return (drift * torch.log(t) + 0.5 * torch.sin(t / 97.0) + walk).float()


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Snapshots of the 0.05 and 0.10 profiles every 50 of 1000 steps, and directly run EMAs for comparison."""
    root = tmp_path_factory.mktemp("posthoc") / "posthoc_ema"
    T, every = 1000, 50
    theta = _trajectory(T, 64)
    model = _Tiny(64, torch.float32)
    emas = {s: PowerEMA(model, s) for s in (0.05, 0.10, 0.07, 0.15)}
    mid = {}
    for t in range(1, T + 1):
        with torch.no_grad():
            model.w.copy_(theta[t - 1])
            model.count += 1
        for s, e in emas.items():
            e.update(model, t)
            if s in (0.05, 0.10) and t % every == 0:
                save_snapshot(root, e)
        if t == 500:
            mid = {s: e.model.w.detach().clone() for s, e in emas.items()}
    return root, emas, mid


def test_snapshots_are_listed_with_their_profile_and_step(stored):
    root, _, _ = stored
    snaps = list_snapshots(root)
    assert len(snaps) == 40 and sorted({s.sigma_rel for s in snaps}) == [0.05, 0.10]
    assert [s.step for s in snaps[:4]] == [50, 50, 100, 100]
    assert snaps[0].path == root / "0.05" / "step_00000050.safetensors"
    assert snaps[0].gamma == sigma_rel_to_gamma(0.05) and snaps[0].buffers == ("count",)
    assert len(list_snapshots(root, max_step=120)) == 4


@pytest.mark.parametrize("sigma_rel", [0.05, 0.10])
def test_reconstructing_a_stored_profile_returns_its_snapshot(stored, sigma_rel):
    root, emas, mid = stored
    snaps = list_snapshots(root)
    state, coeffs = reconstruct(snaps, sigma_rel)
    k = next(i for i, s in enumerate(snaps) if s.step == 1000 and s.sigma_rel == sigma_rel)
    # measured: the coefficient is 1 to ~2e-14, the others below ~1e-14, and the float32 result equals the snapshot
    # bit for bit; the tolerance allows a few float32 ulps for other BLAS builds
    assert float(coeffs[k]) == pytest.approx(1.0, abs=1e-9)
    assert float(coeffs.abs().sum() - coeffs[k].abs()) < 1e-9
    torch.testing.assert_close(state["w"], emas[sigma_rel].model.w.detach(), rtol=1e-6, atol=1e-5)
    assert int(state["count"]) == 1000  # buffers: the newest snapshot's, not combined
    # at an earlier snapshot step only the snapshots up to it are used
    state, coeffs = reconstruct(snaps, sigma_rel, at_step=500)
    assert all(float(c) == 0.0 for c, s in zip(coeffs, snaps) if s.step > 500)
    torch.testing.assert_close(state["w"], mid[sigma_rel], rtol=1e-6, atol=1e-5)
    assert int(state["count"]) == 500


@pytest.mark.parametrize("sigma_rel, tol", [(0.07, 5e-3), (0.15, 2e-2)])
def test_reconstructing_another_sigma_rel_is_close_to_running_that_ema(stored, sigma_rel, tol):
    """Tolerance (measured, 20 snapshots per profile over 1000 steps): ||reconstruction - PowerEMA(sigma_rel)|| relative
    to ||EMA_0.05 - EMA_0.10|| (the scale on which the EMA length matters) is 1.1e-3 for 0.07 (between the stored
    profiles) and 6.2e-3 for 0.15 (outside them); the profiles' relative L2 misfit is 2.5e-3 and 5.8e-3. The bound
    allows about 4x, for other BLAS builds and trajectories; the remaining error is the least-squares misfit of the
    profile, not arithmetic (the stored profiles themselves reconstruct exactly, above)."""
    root, emas, _ = stored
    snaps = list_snapshots(root)
    state, coeffs = reconstruct(snaps, sigma_rel)
    scale = (emas[0.05].model.w - emas[0.10].model.w).norm()
    rel = float((state["w"] - emas[sigma_rel].model.w).norm() / scale)
    assert rel < tol, rel
    misfit = profile_error([s.gamma for s in snaps], [s.step for s in snaps], coeffs, sigma_rel_to_gamma(sigma_rel), 1000)
    assert misfit < tol, misfit
    assert float(coeffs.sum()) == pytest.approx(1.0, abs=2e-3)  # the profile's unit mass is (nearly) kept


def test_reconstruction_bad_input_is_a_clear_error(stored):
    root, _, _ = stored
    snaps = list_snapshots(root)
    with pytest.raises(ValueError, match="no post-hoc EMA snapshots"):
        reconstruct([], 0.1)
    with pytest.raises(ValueError, match=r"sigma_rel=0.5 is out of range"):
        reconstruct(snaps, 0.5)
    with pytest.raises(ValueError, match=r"at_step=2000 is outside the snapshots' steps 50..1000"):
        reconstruct(snaps, 0.1, at_step=2000)
    with pytest.raises(ValueError, match=r"at_step=10"):
        reconstruct(snaps, 0.1, at_step=10)
    with pytest.raises(ValueError, match="non-empty"):
        solve_coefficients([], [], 1.0, 1.0)


def test_coefficients_do_not_depend_on_the_unit_of_time():
    gammas = [sigma_rel_to_gamma(0.05)] * 4 + [sigma_rel_to_gamma(0.10)] * 4
    steps = [250, 500, 750, 1000] * 2
    a = solve_coefficients(gammas, steps, sigma_rel_to_gamma(0.08), 1000)
    b = solve_coefficients(gammas, [s * 4096 for s in steps], sigma_rel_to_gamma(0.08), 1000 * 4096)  # images
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------- trainer and export
def test_config_fields_are_validated_clearly():
    assert TrainConfig().posthoc_ema == () and TrainConfig().posthoc_ema_every == 0
    with pytest.raises(ValueError, match=r"train.posthoc_ema=\[0.05\] needs train.posthoc_ema_every > 0.*got 0"):
        TrainConfig(posthoc_ema=(0.05,))
    with pytest.raises(ValueError, match=r"train.posthoc_ema\[1\]: sigma_rel=0.4 is out of range"):
        TrainConfig(posthoc_ema=(0.05, 0.4), posthoc_ema_every=10)
    with pytest.raises(ValueError, match=r"train.posthoc_ema_every must be >= 0.*got -1"):
        TrainConfig(posthoc_ema_every=-1)
    with pytest.raises(ValueError, match="repeats a profile"):
        TrainConfig(posthoc_ema=(0.1, 0.10), posthoc_ema_every=10)


def _cfg(tones_dir, steps, extra=()):
    return load_config(RECIPE, small_overrides(tones_dir, run_steps=steps, batch=2, extra=[
        "train.checkpoint_every=3", "train.keep_last=1", *extra]))


POSTHOC = ["train.posthoc_ema=[0.05, 0.10]", "train.posthoc_ema_every=2"]


class _Killed(Exception):
    pass


def test_trainer_writes_snapshots_resumes_exactly_and_exports(tones_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from sonodiff.cli import main
    from sonodiff.models.model_dir import load_model_dir
    from sonodiff.training.export import export_run
    from sonodiff.training.loop import train

    quiet = lambda *a: None
    train(_cfg(tones_dir, 8, POSTHOC), tmp_path / "ref", log=quiet)
    ref = tmp_path / "ref" / "posthoc_ema"
    names = sorted(str(p.relative_to(ref)) for p in ref.rglob("*.safetensors"))
    assert names == [f"{s}/step_{t:08d}.safetensors" for s in ("0.05", "0.1") for t in (2, 4, 6, 8)]
    # keep_last=1 pruned the checkpoints, never the snapshots
    assert [p.name for p in (tmp_path / "ref" / "checkpoints").glob("step_*")] == ["step_00000008"]

    # the same run killed during step 6 (checkpoint at step 3, snapshots at 2 and 4 written), then resumed
    original = PowerEMA.update

    def dies_at_6(self, model, t):
        if t == 6:
            raise _Killed
        return original(self, model, t)

    monkeypatch.setattr(PowerEMA, "update", dies_at_6)
    with pytest.raises(_Killed):
        train(_cfg(tones_dir, 8, POSTHOC), tmp_path / "k", log=quiet)
    monkeypatch.setattr(PowerEMA, "update", original)
    assert sorted(p.name for p in (tmp_path / "k" / "posthoc_ema" / "0.1").iterdir()) == [
        "step_00000002.safetensors", "step_00000004.safetensors"]
    logs = []
    assert train(_cfg(tones_dir, 8, POSTHOC), tmp_path / "k", log=logs.append).step == 8
    assert any("resumed from" in m and "step_00000003" in m for m in logs)
    for n in names:  # the same snapshots, bit for bit, as the uninterrupted run
        a, b = load_file(str(ref / n)), load_file(str(tmp_path / "k" / "posthoc_ema" / n))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), n

    # export: the post-hoc reconstruction at a stored sigma_rel is that profile's last snapshot ...
    out = export_run(tmp_path / "ref", tmp_path / "m10", ema_sigma_rel=0.10)
    model, _, mcfg = load_model_dir(out)
    snap = load_file(str(ref / "0.1" / "step_00000008.safetensors"))
    loaded = model.state_dict()
    assert set(loaded) == set(snap)
    for k in snap:
        torch.testing.assert_close(loaded[k], snap[k], rtol=1e-5, atol=1e-6)
    ema = mcfg["source"]["ema"]
    assert ema["kind"] == "posthoc" and ema["sigma_rel"] == 0.10 and ema["at_step"] == 8
    assert len(ema["coefficients"]) == len(ema["snapshots"]) == 8
    # ... and any other one is a loadable model too (through the CLI here)
    assert main(["export", str(tmp_path / "ref"), "--out", str(tmp_path / "m07"), "--ema-sigma-rel", "0.07"]) == 0
    model, _, mcfg = load_model_dir(tmp_path / "m07")
    assert mcfg["source"]["ema"]["sigma_rel"] == 0.07
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    # the default export is the run's EMA, as before, with no post-hoc record
    plain = json.loads((export_run(tmp_path / "ref", tmp_path / "m") / "config.json").read_text())
    assert "ema" not in plain["source"]
    # an out-of-range sigma_rel is a clear error, before anything is written
    with pytest.raises(ValueError, match=r"sigma_rel=0.5 is out of range"):
        export_run(tmp_path / "ref", tmp_path / "bad", ema_sigma_rel=0.5)
    assert not (tmp_path / "bad").exists()


def test_posthoc_ema_cannot_be_added_to_a_run_midway_and_needs_snapshots_to_export(tones_dir, tmp_path):
    from sonodiff.cli import main
    from sonodiff.training.export import export_run
    from sonodiff.training.loop import train

    quiet = lambda *a: None
    run = tmp_path / "run"
    train(_cfg(tones_dir, 3), run, log=quiet)  # a run without post-hoc EMA (as every run before it existed)
    with pytest.raises(FileNotFoundError, match="no post-hoc EMA snapshots up to step 3"):
        export_run(run, tmp_path / "m", ema_sigma_rel=0.1)
    assert main(["export", str(run), "--out", str(tmp_path / "m"), "--ema-sigma-rel", "0.1"]) == 2
    with pytest.raises(ValueError, match=r"without post-hoc EMA.*cannot be turned on at step 3"):
        train(_cfg(tones_dir, 4, POSTHOC), run, log=quiet)
    assert train(_cfg(tones_dir, 4), run, log=quiet).step == 4  # and it still resumes as before
    # a run with profiles resumes with a subset of them, never with a new one
    run2 = tmp_path / "run2"
    train(_cfg(tones_dir, 3, POSTHOC), run2, log=quiet)
    with pytest.raises(ValueError, match=r"adds \[0.2\]"):
        train(_cfg(tones_dir, 4, ["train.posthoc_ema=[0.05, 0.2]", "train.posthoc_ema_every=2"]), run2, log=quiet)
    assert train(_cfg(tones_dir, 4, ["train.posthoc_ema=[0.05]", "train.posthoc_ema_every=2"]), run2,
                 log=quiet).step == 4
    assert [s.step for s in list_snapshots(run2 / "posthoc_ema") if s.sigma_rel == 0.05] == [2, 3, 4]
