import os
import stat

import pytest

from sonodiff.utils.atomic import atomic_path, atomic_write_text


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.wav") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_swaps_a_complete_folder_in_and_keeps_the_old_one_on_error(tmp_path):
    from sonodiff.utils.atomic import atomic_dir, is_temp_name

    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("one")
        assert not target.exists()  # nothing visible until the block completes
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "a.txt").write_text("two, half written")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "one"  # the old folder is untouched
    with atomic_dir(target) as d:
        (d / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced whole, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left behind
    assert is_temp_name(".tmp-ckpt-1-2") and is_temp_name(".x.json.abc.json.tmp") and not is_temp_name("x.json")


def test_atomic_json_and_tensors_round_trip(tmp_path):
    import json

    import torch
    from safetensors.torch import load_file

    from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_json

    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": "é"}, indent=1, sort_keys=True)
    text = (tmp_path / "a.json").read_text(encoding="utf-8")
    assert text.index('"a"') < text.index('"b"') and "é" in text and text.endswith("\n")
    assert json.loads(text) == {"a": "é", "b": 1}
    t = torch.arange(6.0).reshape(2, 3).T  # not contiguous
    atomic_save_tensors(tmp_path / "w.safetensors", {"t": t}, metadata={"k": "v"}, fsync=False)
    assert torch.equal(load_file(str(tmp_path / "w.safetensors"))["t"], t)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_recover_dir_puts_back_a_folder_a_killed_swap_left_aside(tmp_path):
    from sonodiff.utils.atomic import recover_dir

    (tmp_path / ".old-best-12-345").mkdir()  # killed between "rename target aside" and "rename new into place"
    (tmp_path / ".old-best-12-345" / "meta.json").write_text("{}")
    (tmp_path / ".tmp-best-12-346").mkdir()  # the half-written new one
    (tmp_path / "step_00000010").mkdir()
    (tmp_path / ".old-step_00000010-1-2").mkdir()  # the target exists: this copy is garbage
    recover_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step_00000010"]
    assert (tmp_path / "best" / "meta.json").is_file()
