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
