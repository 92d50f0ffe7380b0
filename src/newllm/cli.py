"""Shared entry-point plumbing: every script in ``stages/`` is ``stage_main("<stage name>")``."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from newllm.errors import NewLLMError


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("NEWLLM_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def _run_stage(name: str, params: str) -> None:
    from newllm.config import load
    from newllm.pipeline import BY_NAME

    stage = BY_NAME[name]
    sections = list(stage.sections)
    cfg = load(params, sections=sections)  # every key checked before torch is imported
    if stage.device:
        from newllm.runtime import check_device
        check_device(cfg.runtime)  # before torchrun starts dist.nproc processes that would all fail
    if stage.distributed:
        from newllm.dist import relaunch_under_torchrun
        relaunch_under_torchrun(cfg.dist.nproc)
    module = importlib.import_module(f"newllm.stages.{name}")
    if stage.oom_key:
        from newllm.runtime import oom_advice
        with oom_advice(name, stage.oom_key):
            module.run(cfg)
    else:
        module.run(cfg)


def stage_main(name: str) -> None:
    """Parse ``--params``, run stage ``name`` (``newllm.stages.<name>.run``); a NewLLMError exits 2
    with its message and no traceback."""
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py",
                                     description=f"DVC stage {name} (code: src/newllm/stages/{name}.py)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    setup_logging()
    try:
        _run_stage(name, args.params)
    except NewLLMError as e:
        print(f"error: {e}{after_dvc(name)}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # disk full, permission denied, ...: the file and the reason, not a traceback
        logging.getLogger(__name__).debug("traceback", exc_info=True)  # NEWLLM_LOG=DEBUG shows it
        print(f"error: {e}. Outputs written before this point are complete files (writes are atomic); "
              f"fix the cause and re-run `dvc repro` (training resumes from its rolling checkpoint){after_dvc(name)}",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"interrupted: the last rolling checkpoint is kept; re-run `dvc repro` to resume{after_dvc(name)}",
              file=sys.stderr)
        sys.exit(130)


def after_dvc(name: str) -> str:
    """What a failed stage leaves when DVC ran it (DVC sets DVC_STAGE): DVC deletes a stage's
    outputs before it runs the command, so say how to get them back."""
    if not os.environ.get("DVC_STAGE"):
        return ""
    if name == "check_inputs":
        return (" (params.yaml and the data source are checked before any other stage runs: no other "
                "stage ran and no output was removed)")
    return (f". DVC removed this stage's previous outputs before running it: `dvc checkout {name}` brings "
            f"back the ones dvc.lock records (the last successful run's)")
