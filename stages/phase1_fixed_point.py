"""DVC stage phase1_fixed_point: Phase 1 fixed-point training (see newllm.pipeline.phase1)."""
from newllm.cli import run_stage
from newllm.config import load
from newllm.dist import relaunch_under_torchrun
from newllm.pipeline import phase1


def main(args):
    cfg = load(args.params, sections=phase1.SECTIONS)
    relaunch_under_torchrun(cfg.dist.nproc)
    phase1.run(cfg)


if __name__ == "__main__":
    run_stage(main, __doc__)
