import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from sonodiff.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from sonodiff.training.ema import EMA


def _states(seed):
    torch.manual_seed(seed)
    m = nn.Linear(4, 3)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    return m.state_dict(), {"optimizer": opt.state_dict(), "step": torch.tensor(seed)}


def test_save_load_roundtrip_and_prune(tmp_path):
    for step in (10, 20, 30):
        ms, ts = _states(step)
        save_checkpoint(tmp_path, step, model_state=ms, ema_state=ms, trainer_state=ts, meta={"x": step})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000010", "step_00000020", "step_00000030"]
    assert latest_checkpoint(tmp_path).name == "step_00000030"
    m, e, t, meta = load_checkpoint(latest_checkpoint(tmp_path))
    ms, ts = _states(30)
    assert all(torch.equal(m[k], ms[k]) for k in ms)
    assert meta == {"x": 30, "step": 30}
    assert t["optimizer"]["state"][0]["exp_avg"].shape == ms["weight"].shape
    prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000020", "step_00000030"]


def test_incomplete_checkpoint_is_never_latest(tmp_path):
    ms, ts = _states(1)
    save_checkpoint(tmp_path, 1, model_state=ms, ema_state=ms, trainer_state=ts, meta={})
    # A checkpoint folder without meta.json (as a kill before its last write would leave in a temp dir,
    # or a corrupt pointer) must not be picked.
    bad = tmp_path / "step_00000002"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "latest").write_text("step_00000002\n")
    assert latest_checkpoint(tmp_path).name == "step_00000001"


def test_kill_during_checkpoint_write_leaves_previous_loadable(tmp_path):
    """SIGKILL a process while it is writing a large checkpoint; the previous one must still load."""
    ms, ts = _states(1)
    save_checkpoint(tmp_path, 1, model_state=ms, ema_state=ms, trainer_state=ts, meta={"ok": True})
    script = textwrap.dedent(f"""
        import torch, sys
        from sonodiff.training.checkpoint import save_checkpoint
        big = {{"w": torch.randn(4000, 4000)}}
        print("start", flush=True)
        for step in range(2, 1000):
            save_checkpoint({str(tmp_path)!r}, step, model_state=big, ema_state=big, trainer_state={{}}, meta={{}})
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "start"
    import time

    time.sleep(1.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    latest = latest_checkpoint(tmp_path)
    assert latest is not None
    m, e, t, meta = load_checkpoint(latest)  # whatever is latest must be complete and loadable
    assert set(m) in ({"w"}, set(ms))
    m1, _, _, meta1 = load_checkpoint(tmp_path / "step_00000001")
    assert meta1["ok"] is True and torch.equal(m1["weight"], ms["weight"])
    prune_checkpoints(tmp_path, keep_last=1)
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_ema_half_life_and_rampup():
    torch.manual_seed(0)
    m = nn.Linear(2, 2, bias=False)
    ema = EMA(m, half_life_samples=100, rampup=None)
    with torch.no_grad():
        m.weight.add_(1.0)
    target = m.weight.detach().clone()
    start = ema.model.weight.detach().clone()
    for _ in range(10):  # 10 steps of 10 samples = one half-life
        ema.update(m, batch=10, samples_seen=0)
    # after one half-life the EMA is half-way from its start to the (constant) model weights
    torch.testing.assert_close(ema.model.weight, 0.5 * (start + target), rtol=1e-5, atol=1e-6)
    ramped = EMA(m, half_life_samples=1e6, rampup=0.05)
    assert ramped.beta(batch=10, samples_seen=100) == pytest.approx(0.5 ** (10 / 5.0))
    assert EMA(m, 0).beta(10, 10) == 0.0
