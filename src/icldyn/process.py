"""Process-wide settings of an icldyn process and its workers: glibc's allocator.

Without them glibc returns freed blocks of a step's large tensors to the kernel (mmap'd blocks,
heap trimming) and takes them back as page faults at the next step: a large share of a big step,
and of a whole quick preset's system time (`benchmarks/README.md`, cases `allocator` and the
issue-19 pass). The settings keep freed memory in the process instead, so its resident size
stays at its high-water mark. The Makefile exports them for `make demo`/`make test`; `icldyn`
applies them to itself and to the workers it spawns, unless the environment already sets them.
"""

from __future__ import annotations

import os

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def tune_malloc() -> bool:
    """Apply MALLOC_ENV's settings to this process through glibc's mallopt (what the variables do
    when set before a process starts). False where there is no glibc (then nothing changes)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    ok = mallopt(M_MMAP_MAX, int(MALLOC_ENV["MALLOC_MMAP_MAX_"]))
    ok &= mallopt(M_TRIM_THRESHOLD, min(int(MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]), 2**31 - 1))
    return bool(ok)


def configure_allocator() -> bool:
    """The allocator settings for this process and the processes it starts (their environment),
    unless the environment names either already: the user's choice, or glibc's own defaults
    asked for by setting them. True when they were applied here."""
    if any(key in os.environ for key in MALLOC_ENV):
        return False
    os.environ.update(MALLOC_ENV)
    return tune_malloc()
