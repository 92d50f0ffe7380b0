"""Device, precision, peak memory, progress lines, and CUDA out-of-memory advice."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import torch

from newllm.config import RuntimeConfig
from newllm.errors import NewLLMError
from newllm.memory import peak_rss_mb

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    precision: str

    @classmethod
    def from_config(cls, cfg: RuntimeConfig) -> "Runtime":
        check_device(cfg)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        name = device_type(cfg)
        rt = cls(torch.device(name), cfg.precision)
        log.info("device %s%s, precision %s, %d CPU threads", name,
                 f" ({torch.cuda.get_device_name(0)})" if name == "cuda" else "", cfg.precision,
                 torch.get_num_threads())
        if name == "cpu" and not cpu_has_native(cfg.precision):
            log.warning("runtime.precision = %r on a CPU without %s matrix instructions (%s): torch "
                        "emulates them, which can make every matmul many times slower than fp32 "
                        "(docs/colab.md, \"GPU, mixed precision, memory\"); runtime.precision: fp32 "
                        "is the fast choice on this CPU", cfg.precision, cfg.precision,
                        " or ".join(NATIVE_HALF[cfg.precision]))
        return rt

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype autocast gives matmuls in training (fp32 when there is no autocast)."""
        return _DTYPES.get(self.precision, torch.float32)

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self):
        """A GradScaler for fp16, else None."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)


# The CPU features (torch.cpu._is_<name>_supported) with which oneDNN runs bf16/fp16 matmuls in
# hardware; without any of them torch falls back to a slow emulation.
NATIVE_HALF = {"bf16": ("amx_tile", "avx512_bf16"), "fp16": ("amx_fp16",)}


def cpu_has_native(precision: str) -> bool:
    """Whether this CPU has matrix instructions for ``precision`` (always True for fp32). Reads
    torch's private CPU probes; a torch without them is taken to have the instructions (no
    warning rather than a false one)."""
    if precision == "fp32":
        return True
    probes = [getattr(torch.cpu, f"_is_{n}_supported", None) for n in NATIVE_HALF[precision]]
    if any(p is None for p in probes):
        return True
    return any(p() for p in probes)


def device_type(cfg: RuntimeConfig) -> str:
    """``cuda`` or ``cpu``: what ``runtime.device`` picks on this machine (auto: CUDA when torch sees one)."""
    return "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"


def check_device(cfg: RuntimeConfig) -> None:
    """Stop at stage start when the asked-for device is not there."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise NewLLMError("runtime.device = 'cuda' but no CUDA GPU is visible to torch; "
                          "use runtime.device: auto or cpu")


def peak_memory(device: torch.device) -> dict:
    out = {"peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def merge_peaks(earlier: dict, now: dict) -> dict:
    """Peak figures: the larger of an earlier reading (e.g. the max over ranks) and now."""
    return {**earlier, **{k: max(v, earlier.get(k, 0.0)) for k, v in now.items()}}


class Progress:
    """Logs tokens done/total, tokens/s and ETA every ``every`` seconds of a long piece of work,
    and its end once it has logged a line (short work logs nothing: its caller's summary line
    is enough)."""

    def __init__(self, label: str, total: int, every: float = 10.0, unit: str = "tokens"):
        self.label, self.total, self.every, self.unit = label, total, every, unit
        self.start = self.last = time.perf_counter()
        self.done = 0
        self.logged = False

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every or (self.logged and self.done >= self.total):
            self.last = now
            self.logged = True
            log.info("%s", self.line())

    def line(self) -> str:
        el = time.perf_counter() - self.start
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        speed = f"{rate:,.0f} tok/s" if self.unit == "tokens" else f"{el:,.0f}s so far"
        return (f"{self.label}: {self.done}/{self.total} {self.unit} ({100.0 * self.done / max(self.total, 1):.0f}%), "
                f"{speed}, ETA {eta:,.0f}s")


# torch.OutOfMemoryError since torch 2.5; torch.cuda.OutOfMemoryError (the same class) before
OutOfMemoryError = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


def oom_message(what: str, batch_key: str, err: BaseException) -> str:
    """What to change when ``what`` ran out of GPU memory: the knobs, the biggest lever first."""
    section = batch_key.split(".")[0]
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (f"{what} ran out of GPU memory ({first}). Reduce memory with any of: "
            f"{section}.chunk_tokens (tokens per forward/backward chunk), "
            f"{batch_key} (tokens per optimizer step), data.num_samples (fewer tokens), "
            f"runtime.precision: bf16 or fp16 (half-size activations), "
            f"model.context_dim/embed_dim (a smaller model); on a GPU shared with other work, free "
            f"it first. (These params change the result: a re-run with them starts {what} afresh.)")


@contextlib.contextmanager
def oom_advice(what: str, batch_key: str):
    """Turn a CUDA out-of-memory error into a message naming the knobs that reduce memory."""
    try:
        yield
    except OutOfMemoryError as e:
        raise NewLLMError(oom_message(what, batch_key, e)) from None
