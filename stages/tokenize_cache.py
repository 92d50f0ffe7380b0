"""Stage tokenize_cache: GPT-2 token caches, the tokenizer and metrics/data.json."""
from newllm.cli import run_stage
from newllm.config import load
from newllm.data import tokenize


def main(args):
    tokenize.run(load(args.params, sections=["data"]))


if __name__ == "__main__":
    run_stage(main, __doc__)
