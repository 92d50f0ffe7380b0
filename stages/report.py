"""DVC stage report: the HTML report of the run (see newllm.pipeline.report)."""
from newllm.cli import run_stage
from newllm.config import STAGE_SECTIONS, load


def main(args):
    cfg = load(args.params, sections=STAGE_SECTIONS["report"])  # before the heavy imports
    from newllm.pipeline import report

    report.run(cfg)


if __name__ == "__main__":
    run_stage(main, __doc__)
