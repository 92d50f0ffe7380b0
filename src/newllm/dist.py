"""Data-parallel training on torch.distributed: processes launched by ``torchrun``,
gradients all-reduced by PyTorch DDP, loop statistics reduced with ``all_reduce``.

Streams are sharded across ranks (``engine.Schedule.shard``); every optimizer
batch is the same global range of the schedule on every rank, each rank
computing its own streams' tokens. The sum over ranks is exactly the
single-process batch, so results agree up to float rounding.
"""
from __future__ import annotations

import logging
import os
import shlex
import sys
from dataclasses import dataclass

import torch
import torch.distributed as tdist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place; a no-op in a single process."""
        if self.active:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def sum_floats(self, *vals: float) -> list[float]:
        return self._reduce_floats(vals, tdist.ReduceOp.SUM if self.active else None)

    def max_floats(self, *vals: float) -> list[float]:
        return self._reduce_floats(vals, tdist.ReduceOp.MAX if self.active else None)

    def _reduce_floats(self, vals, op) -> list[float]:
        t = torch.tensor(vals, dtype=torch.float64)
        if self.active:
            # gloo reduces CPU tensors, nccl CUDA tensors
            dev = torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else "cpu"
            t = t.to(dev)
            tdist.all_reduce(t, op=op)
        return t.cpu().tolist()

    def memory(self, mem: dict) -> dict:
        """Peak memory figures as the maximum over ranks (collective), plus the world size."""
        keys = sorted(mem)
        return {**dict(zip(keys, self.max_floats(*(mem[k] for k in keys)))), "world_size": self.world}

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()


SINGLE = Dist()


def init_from_env(device_type: str) -> Dist:
    """Join the process group torchrun set up (env WORLD_SIZE/RANK); single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not tdist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group(backend=backend)
    d = Dist(tdist.get_rank(), tdist.get_world_size())
    log.info("data-parallel rank %d of %d (%s)", d.rank, d.world, tdist.get_backend())
    return d


def relaunch_under_torchrun(nproc: int) -> None:
    """When ``dist.nproc > 1`` and this process was not started by torchrun, replace it by
    ``torchrun --standalone --nproc_per_node nproc <same script and args>``.

    Several machines: set ``NEWLLM_TORCHRUN_ARGS`` to the rendezvous arguments (e.g.
    ``--nnodes 2 --node_rank 0 --rdzv-backend c10d --rdzv-endpoint head:29500``); they
    replace ``--standalone``, and ``dist.nproc`` is the processes per machine."""
    if nproc <= 1 or "LOCAL_RANK" in os.environ:
        return
    extra = shlex.split(os.environ.get("NEWLLM_TORCHRUN_ARGS", "")) or ["--standalone"]
    argv = [sys.executable, "-m", "torch.distributed.run", *extra, f"--nproc_per_node={nproc}", *sys.argv]
    log.info("launching %d processes: %s", nproc, " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def shutdown(d: Dist) -> None:
    if d.active and tdist.is_initialized():
        tdist.destroy_process_group()
