"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename over the target.

A reader (or a process killed part-way) sees either the old file or the complete new one, never a torn
write (POSIX rename is atomic within a file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_dir", "atomic_path", "atomic_save_tensors", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "fsync_dir", "fsync_tree", "is_temp_name", "recover_dir"]

# every temporary name this module makes starts with "." and ends with TEMP_SUFFIX (files) or starts with
# ".tmp-" (folders), so a cleaner can tell a killed writer's leftovers from real files (:func:`is_temp_name`)
TEMP_SUFFIX = ".tmp"


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so a rename inside it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file or folder name made by this module (a killed writer's leftover)."""
    return (name.startswith(".") and name.endswith(TEMP_SUFFIX)) or name.startswith((".tmp-", ".old-"))


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``, on error delete it.

    ``suffix`` (default: the target's) matters for writers that pick a format from the extension.
    ``fsync=False`` skips the flushes to disk (the rename stays atomic, so a reader never sees a torn file,
    but a power loss may lose the write): for caches that can be rebuilt.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.",
                               suffix=(suffix if suffix is not None else target.suffix) + TEMP_SUFFIX,
                               dir=str(target.parent))
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if fsync:
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, target)
        if fsync:
            fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def fsync_tree(path: str | Path) -> None:
    """fsync every file below ``path`` and the folders themselves."""
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for p in sorted(Path(path).rglob("*")):
        if p.is_dir():
            fsync_dir(p)
    fsync_dir(path)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success swap it in as ``target``.

    An existing ``target`` is renamed aside (``.old-*``), the new folder renamed into place and the old one
    deleted. A writer killed between the two renames leaves only ``.old-*``: :func:`recover_dir` puts it back, so
    the complete old folder is never lost. On error the old folder is put back and the temporary one deleted.
    """
    import shutil
    import time

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
    old = target.parent / f".old-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        fsync_dir(target.parent)
    except BaseException:
        if old.exists() and not target.exists():  # failed between the two renames: put the old folder back
            old.rename(target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)  # the new folder is in place; the old one is only garbage now


def recover_dir(parent: str | Path) -> None:
    """Clean up after killed :func:`atomic_dir` writers in ``parent``: an ``.old-NAME-*`` folder whose ``NAME`` is
    missing is renamed back to ``NAME`` (it is the last complete copy); other ``.tmp-*`` / ``.old-*`` folders go."""
    import re
    import shutil

    parent = Path(parent)
    if not parent.is_dir():
        return
    for p in sorted(parent.iterdir()):
        m = re.match(r"^\.old-(.+)-\d+-\d+$", p.name)
        if m and p.is_dir() and not (parent / m.group(1)).exists():
            p.rename(parent / m.group(1))
    for p in parent.iterdir():
        if p.is_dir() and p.name.startswith((".tmp-", ".old-")):
            shutil.rmtree(p, ignore_errors=True)


def atomic_write_bytes(target: str | Path, data: bytes, fsync: bool = True) -> None:
    with atomic_path(target, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, obj, indent: int | None = 2, sort_keys: bool = False) -> None:
    """``obj`` as UTF-8 JSON (non-ASCII kept; compact separators when ``indent`` is None), newline-terminated."""
    # json.dumps (C encoder) rather than json.dump (pure-Python streaming): about 5x faster
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False,
                      separators=None if indent is not None else (",", ":"))
    atomic_write_text(target, text + "\n")


def atomic_save_tensors(target: str | Path, tensors: dict, metadata: dict[str, str] | None = None,
                        fsync: bool = True) -> None:
    """Write a ``{name: tensor}`` dict as a safetensors file atomically (tensors moved to CPU, made contiguous)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(target, fsync=fsync) as tmp:
        save_file(flat, str(tmp), metadata=metadata)
