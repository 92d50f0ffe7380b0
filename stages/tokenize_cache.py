"""Stage tokenize_cache: GPT-2 token caches, the tokenizer and metrics/data.json."""
from newllm.cli import run_stage
from newllm.config import STAGE_SECTIONS, load


def main(args):
    cfg = load(args.params, sections=STAGE_SECTIONS["tokenize_cache"])  # before the heavy imports
    from newllm.data import tokenize

    tokenize.run(cfg)


if __name__ == "__main__":
    run_stage(main, __doc__)
