"""CPU memory allocator setting for training.

PyTorch's CPU tensors come from the C library's `malloc`. glibc serves every block above its mmap threshold (at most
32 MiB) with a fresh `mmap` and gives it back with `munmap` when the tensor is freed, so each training step touches
brand-new pages again: the tied 30522 x 768 embedding / output-layer gradient (94 MB, allocated, zero-filled and summed
every step) and the stem's 112 x 112 activation maps page-fault on every use. On the design-size model (2-core CPU,
batch 8) that was ~10% of the step (`aten::fill_` of the embedding gradient alone: 130 ms of 2.8 s).

`keep_freed_memory()` tells glibc to serve all blocks from its heap and to keep freed memory for reuse instead of
returning it to the system. Values are unchanged; the process keeps its peak memory until it exits (the peak itself
stayed within ~1% in the benchmarks). Allocations made by other threads above their arena's 64 MiB heap still fall
back to mmap. Benchmarks apply it to every model they compare (`benchmarks/compare_captioners.py`).
"""

import ctypes
import logging
import os
import platform


logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1
ENV_SWITCH = "CENTERFOCUS_KEEP_FREED_MEMORY"
_applied = False


def keep_freed_memory() -> bool:
    """Make glibc's `malloc` reuse freed memory (see the module docstring). Returns whether the setting is in
    effect: False on non-glibc systems, or when the environment variable `CENTERFOCUS_KEEP_FREED_MEMORY=0`."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success; with no mmap at all, a heap that cannot grow still falls back to mmap
    _applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    if _applied:
        logger.info("glibc malloc keeps freed memory for reuse (set %s=0 to turn off).", ENV_SWITCH)
    return _applied
