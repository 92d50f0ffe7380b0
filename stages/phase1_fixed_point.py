"""DVC stage phase1_fixed_point: Phase 1 fixed-point training (see newllm.pipeline.phase1)."""
from newllm.cli import run_stage
from newllm.config import STAGE_SECTIONS, load


def main(args):
    cfg = load(args.params, sections=STAGE_SECTIONS["phase1_fixed_point"])  # before torch is imported
    from newllm.dist import relaunch_under_torchrun
    from newllm.pipeline import phase1
    from newllm.runtime import check_device, oom_advice

    check_device(cfg.runtime)  # before torchrun starts dist.nproc processes that would all fail
    relaunch_under_torchrun(cfg.dist.nproc)
    with oom_advice("phase1_fixed_point", "phase1.batch_tokens"):  # also outside the training loop
        phase1.run(cfg)


if __name__ == "__main__":
    run_stage(main, __doc__)
