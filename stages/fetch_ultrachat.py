"""Stage fetch_ultrachat: conversations (train, validation) into data/raw/."""
from newllm.cli import run_stage
from newllm.config import STAGE_SECTIONS, load


def main(args):
    cfg = load(args.params, sections=STAGE_SECTIONS["fetch_ultrachat"])  # before the heavy imports
    from newllm.data import fetch

    fetch.run(cfg)


if __name__ == "__main__":
    run_stage(main, __doc__)
