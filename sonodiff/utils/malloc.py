"""Keep freed memory in the process for reuse (glibc), so CPU inference does not page-fault on every call.

On CPU, PyTorch frees every activation after use and allocates it again at the next network call. glibc serves
large blocks with ``mmap`` and gives them back with ``munmap`` (its threshold adapts, but only up to 32 MB) and trims
the heap top after frees, so each call of a U-Net touches fresh zero pages again: on this project's 2-core machine
about 100,000-200,000 minor page faults and 0.2-0.4 s of system time per 4 s clip of corpus_sfx_mel. Raising
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` with ``mallopt`` (glibc's documented tunables, the same as the
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables) keeps those pages mapped and reused.

The cost: memory freed by the process is not returned to the operating system until it exits (peak use is
unchanged). The ``sonodiff`` generation commands call :func:`keep_freed_memory` on CPU; Python users opt in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 2**31 - 1) -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` (blocks smaller than this come from the heap, where freed memory is
    reused; 32 MiB is the largest value every 64-bit glibc accepts) and ``M_TRIM_THRESHOLD`` (free memory at the
    heap top is kept up to this many bytes). Both are needed: setting either one turns off glibc's adaptive
    threshold, and the trim threshold alone makes every block above 128 KiB an ``mmap`` (measured: 10x the page
    faults). Process-wide; call it once.

    Returns True when both were set; False where the C library is not glibc (macOS, Windows, musl), where it does
    nothing.
    """
    if not 0 <= mmap_threshold < 2**31 or not 0 <= trim_threshold < 2**31:
        raise ValueError(f"thresholds must be ints in [0, 2**31): mmap_threshold={mmap_threshold}, "
                         f"trim_threshold={trim_threshold}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    return ok_mmap and ok_trim
