"""End-to-end training on CPU: loss falls, export round-trips, resume is exact, DDP matches one process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sonodiff.training.config import load_config
from sonodiff.training.logging import read_metrics
from sonodiff.training.loop import NonFiniteError, train
from sonodiff.utils.config import ConfigError

from .conftest import small_overrides

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny_debug.toml"


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir)}


def test_tiny_debug_trains_and_exports(tones_dir, tmp_path):

    from sonodiff.models.model_dir import load_model_dir
    from sonodiff.training.checkpoint import latest_checkpoint, load_checkpoint
    from sonodiff.training.export import export_run

    cfg = load_config(RECIPE, small_overrides(tones_dir, run_steps=60, batch=8,
                                              extra=["train.log_every=1", "train.checkpoint_every=30"]))
    res = train(cfg, tmp_path / "run", log=lambda *a: None)
    assert res.step == 60 and res.skipped_steps == 0
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert last < first / 3, f"loss fell only from {first:.3f} to {last:.3f}"
    # demos were written at the end
    assert list((tmp_path / "run" / "demos" / "step_00000060").glob("*.wav"))
    # the exported directory loads back with identical (EMA) weights
    out = export_run(tmp_path / "run", tmp_path / "model")
    model, codec, mcfg = load_model_dir(out)
    _, ema_state, _, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    loaded = model.state_dict()
    assert set(loaded) == set(ema_state)
    assert all(torch.equal(loaded[k], ema_state[k]) for k in ema_state)
    assert mcfg["audio"]["sample_rate"] == 8000 and codec.is_fitted


def _cli(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "sonodiff", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_resume_is_bit_exact(tones_dir, tmp_path):
    over = small_overrides(tones_dir, run_steps=30, extra=["train.log_every=1", "train.checkpoint_every=5"])
    sets = [a for o in over for a in ("--set", o)]
    ref = _cli(["train", str(RECIPE), "--out", str(tmp_path / "ref"), *sets])
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out
    # the same run, killed with SIGKILL once a mid-run checkpoint exists, then started again
    p = _cli(["train", str(RECIPE), "--out", str(tmp_path / "k"), *sets])
    ck = tmp_path / "k" / "checkpoints" / "step_00000010"
    t0 = time.time()
    while not (ck / "meta.json").exists():
        assert p.poll() is None, "run finished before it could be killed"
        assert time.time() - t0 < 300
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "k" / "checkpoints" / "step_00000030").exists()
    again = _cli(["train", str(RECIPE), "--out", str(tmp_path / "k"), *sets])
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert "resumed from" in out
    a, b = _losses(tmp_path / "ref"), _losses(tmp_path / "k")
    assert sorted(a) == sorted(b) == list(range(1, 31))
    assert [a[s] for s in a] == [b[s] for s in a]  # bit for bit, every step, before and after the kill


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_single_process(tones_dir, tmp_path):
    over = small_overrides(tones_dir, run_steps=8, batch=4, extra=["train.log_every=1", "train.checkpoint_every=8"])
    sets = [a for o in over for a in ("--set", o)]
    single = _cli(["train", str(RECIPE), "--out", str(tmp_path / "one"), *sets])
    out, _ = single.communicate(timeout=600)
    assert single.returncode == 0, out
    env = {**os.environ, "SONODIFF_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    ddp = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "sonodiff", "train", str(RECIPE),
                          "--out", str(tmp_path / "two"), *sets], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-4), (s, a[s], b[s])


def test_nan_guard_skips_then_aborts_with_checkpoint(tones_dir, tmp_path):
    cfg = load_config(RECIPE, small_overrides(tones_dir, run_steps=20, extra=["optim.lr=1e30", "optim.warmup_steps=0",
                                                                             "optim.grad_clip=0", "train.max_bad_steps=3"]))
    with pytest.raises(NonFiniteError, match="3 consecutive non-finite steps") as e:
        train(cfg, tmp_path / "nan", log=lambda *a: None)
    # the last good state was saved and is loadable
    from sonodiff.training.checkpoint import latest_checkpoint, load_checkpoint

    ck = latest_checkpoint(tmp_path / "nan" / "checkpoints")
    assert ck is not None and str(ck) in str(e.value)
    m, _, _, _ = load_checkpoint(ck)
    assert all(torch.isfinite(v).all() for v in m.values() if v.is_floating_point())


def test_config_errors_suggest_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.lrate.*did you mean 'lr'"):
        load_config(RECIPE, ["data.root=x", "optim.lrate=1"])
    with pytest.raises(ConfigError, match=r"train.precision: 'fp8' is not allowed"):
        load_config(RECIPE, ["data.root=x", "train.precision=fp8"])
    with pytest.raises(ConfigError, match="data.root is empty"):
        load_config(RECIPE)
    r = _cli(["train", str(RECIPE), "--out", str(tmp_path / "x"), "--set", "data.root=x", "--set", "model.presett=a"])
    out, _ = r.communicate(timeout=120)
    assert r.returncode == 2 and "did you mean 'preset'" in out


def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(tones_dir, tmp_path):
    over = small_overrides(tones_dir, run_steps=500, extra=["train.log_every=1", "train.checkpoint_every=1000"])
    sets = [a for o in over for a in ("--set", o)]
    p = _cli(["train", str(RECIPE), "--out", str(tmp_path / "t"), *sets])
    t0 = time.time()
    while len(read_metrics(tmp_path / "t")) < 3:
        assert p.poll() is None and time.time() - t0 < 300
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    from sonodiff.training.checkpoint import latest_checkpoint

    ck = latest_checkpoint(tmp_path / "t" / "checkpoints")
    last = max(r["step"] for r in read_metrics(tmp_path / "t"))
    assert ck is not None and ck.name == f"step_{last:08d}" and 3 <= last < 500
    assert "checkpoint saved" in out


def test_resume_with_a_different_model_config_is_refused_clearly(tones_dir, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(RECIPE, small_overrides(tones_dir, run_steps=2, batch=2))
    train(cfg, run, log=lambda *a: None)
    # more steps is a legitimate resume ...
    more = load_config(RECIPE, small_overrides(tones_dir, run_steps=3, batch=2))
    assert train(more, run, log=lambda *a: None).step == 3
    # ... a different network is not: a clear error naming the field, not a state_dict key dump
    other = load_config(RECIPE, small_overrides(tones_dir, run_steps=4, batch=2, extra=["model.sigma_data=0.7"]))
    with pytest.raises(ValueError, match=r"different config.*model\.sigma_data"):
        train(other, run, log=lambda *a: None)


def test_engine_reproduces_the_diffusion_loop_it_replaced(tones_dir, tmp_path):
    """The diffusion trainer on the task engine computes what the loop before it computed, step for step (a
    golden written by that loop at commit 031d3b0), and a run stopped at its step-6 checkpoint and resumed
    continues exactly: existing runs and recipes resume and train as before."""
    from sonodiff.training.checkpoint import latest_checkpoint, load_checkpoint

    golden = json.loads((Path(__file__).parent / "golden" / "tiny_debug_losses.json").read_text())
    over = small_overrides(tones_dir, run_steps=12, batch=4, extra=["train.log_every=1", "train.checkpoint_every=6"])
    res = train(load_config(RECIPE, over), tmp_path / "run", log=lambda *a: None)
    # The golden was written in an earlier session, on another machine; float32 kernels sum in another order on
    # other CPUs (this AMD EPYC: 1.8e-5 relative by step 12, with the code of that session too), so the comparison
    # with it allows 1e-4; on one machine the run is exact (the resume below compares bit for bit).
    assert list(res.losses) == pytest.approx(golden["losses"], rel=1e-4, abs=0)
    _, ema, _, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert float(sum(v.double().sum() for v in ema.values())) == pytest.approx(golden["ema_sum"], rel=1e-5)
    # the same run from its step-6 checkpoint (the later ones removed): same losses, same weights
    shutil.copytree(tmp_path / "run", tmp_path / "again")
    shutil.rmtree(tmp_path / "again" / "checkpoints" / "step_00000012")
    (tmp_path / "again" / "checkpoints" / "latest").unlink(missing_ok=True)
    more = train(load_config(RECIPE, over), tmp_path / "again", log=lambda *a: None)
    assert list(more.losses) == list(res.losses[6:])
    _, ema2, _, _ = load_checkpoint(latest_checkpoint(tmp_path / "again" / "checkpoints"))
    assert all(torch.equal(ema[k], ema2[k]) for k in ema)
