"""DVC stage phase2_lm: Phase 2 next-token training (see newllm.pipeline.phase2)."""
from newllm.cli import run_stage
from newllm.config import load
from newllm.pipeline import phase2


def main(args):
    phase2.run(load(args.params, sections=phase2.SECTIONS))


if __name__ == "__main__":
    run_stage(main, __doc__)
