"""DVC stage report: the HTML report of the run (see newllm.pipeline.report)."""
from newllm.cli import run_stage
from newllm.config import load
from newllm.pipeline import report


def main(args):
    report.run(load(args.params, sections=report.SECTIONS))


if __name__ == "__main__":
    run_stage(main, __doc__)
