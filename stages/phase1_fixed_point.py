"""DVC stage phase1_fixed_point: Phase 1 fixed-point training (see newllm.pipeline.phase1)."""
from newllm.cli import run_stage
from newllm.config import load
from newllm.pipeline import phase1


def main(args):
    phase1.run(load(args.params, sections=phase1.SECTIONS))


if __name__ == "__main__":
    run_stage(main, __doc__)
