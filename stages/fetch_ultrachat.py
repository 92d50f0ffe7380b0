"""Stage fetch_ultrachat: conversations (train, validation) into data/raw/."""
from newllm.cli import run_stage
from newllm.config import load
from newllm.data import fetch


def main(args):
    fetch.run(load(args.params, sections=["data"]))


if __name__ == "__main__":
    run_stage(main, __doc__)
