"""Peak resident memory of this process, without importing torch (the fetch stage records it
and starts without torch; newllm.runtime adds the GPU's figure)."""
from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024.0 if sys.platform != "darwin" else kb / 2**20, 1)
