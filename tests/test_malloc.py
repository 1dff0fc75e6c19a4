"""sonodiff.utils.malloc: glibc keeps freed memory for reuse, so repeated large allocations stop page-faulting."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from sonodiff.utils.malloc import keep_freed_memory

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt tunables exist only in glibc")

# Allocate four 8 MiB buffers (U-Net activations), write every page, free them; 20 times. Prints the minor page
# faults of the loop. Run in a fresh process: the setting is process-wide.
PROBE = """
import resource, sys
import torch
if sys.argv[1] == "on":
    from sonodiff.utils.malloc import keep_freed_memory
    assert keep_freed_memory()
xs = [torch.ones(2 << 20) for _ in range(4)]  # warm up: the first pass always faults
del xs
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    xs = [torch.ones(2 << 20) for _ in range(4)]  # 4 x 8 MiB, every page written
    del xs
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@glibc
def test_keep_freed_memory_stops_repeated_page_faults():
    off, on = faults("off"), faults("on")
    # 32 MiB / 4 KiB = 8,192 faults per pass when the buffers are fresh memory; glibc's defaults (adaptive mmap
    # threshold, heap-top trimming) give several such passes out of 20 (about 40,000 faults measured here)
    assert off > 16_000, off
    assert on < 8_192, on  # less than one pass (2,048-4,096 measured)


def test_keep_freed_memory_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="mmap_threshold=-1"):
        keep_freed_memory(mmap_threshold=-1)
    with pytest.raises(ValueError, match="trim_threshold"):
        keep_freed_memory(trim_threshold=2**40)
