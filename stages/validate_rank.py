"""DVC stage validate_rank: effective rank, convergence check and verdict (see newllm.pipeline.validate)."""
from newllm.cli import run_stage
from newllm.config import load
from newllm.pipeline import validate


def main(args):
    validate.run(load(args.params, sections=validate.SECTIONS))


if __name__ == "__main__":
    run_stage(main, __doc__)
