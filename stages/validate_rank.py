"""DVC stage validate_rank: effective rank, convergence check and verdict (see newllm.pipeline.validate)."""
from newllm.cli import run_stage
from newllm.config import STAGE_SECTIONS, load


def main(args):
    cfg = load(args.params, sections=STAGE_SECTIONS["validate_rank"])  # before torch is imported
    from newllm.pipeline import validate

    validate.run(cfg)


if __name__ == "__main__":
    run_stage(main, __doc__)
