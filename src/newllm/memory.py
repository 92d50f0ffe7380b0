"""Host memory: the peak resident memory of this process, without importing torch (the fetch
stage records it and starts without torch; newllm.runtime adds the GPU's figure), and the glibc
setting the language-model stages use to keep their peak flat."""
from __future__ import annotations

import ctypes
import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024.0 if sys.platform != "darwin" else kb / 2**20, 1)


def limit_heap_retention(threshold: int = 1 << 20) -> bool:
    """glibc only: serve every allocation of ``threshold`` bytes or more by mmap, so it goes back
    to the OS when freed. By default glibc raises that threshold (up to 32 MB) as big blocks are
    freed; Phase 2's chunk activations, whose sizes vary from batch to batch, then fragment the
    heap; a fixed threshold keeps the peak flat for a few percent more time (page faults).
    Returns whether it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, int(threshold)))  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
