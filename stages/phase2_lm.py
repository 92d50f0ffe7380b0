"""DVC stage phase2_lm: Phase 2 next-token training (see newllm.pipeline.phase2)."""
from newllm.cli import run_stage
from newllm.config import STAGE_SECTIONS, load

SECTIONS = ["phase2", "runtime", "resume", "dist"]  # = newllm.pipeline.phase2.SECTIONS


def main(args):
    cfg = load(args.params, sections=STAGE_SECTIONS.get("phase2_lm", SECTIONS))  # before torch is imported
    from newllm.dist import relaunch_under_torchrun
    from newllm.pipeline import phase2
    from newllm.runtime import check_device, oom_advice

    check_device(cfg.runtime)  # before torchrun starts dist.nproc processes that would all fail
    relaunch_under_torchrun(cfg.dist.nproc)
    with oom_advice("phase2_lm", "phase2.batch_tokens"):  # also outside the training loop
        phase2.run(cfg)


if __name__ == "__main__":
    run_stage(main, __doc__)
