"""Shared entry-point plumbing for the thin scripts in ``stages/``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from .errors import NewLLMError


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("NEWLLM_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def run_stage(main: Callable[[argparse.Namespace], None], description: str) -> None:
    """Parse ``--params``, run ``main``; a NewLLMError exits 2 with its message, no traceback."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    setup_logging()
    try:
        main(args)
    except NewLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # disk full, permission denied, ...: the file and the reason, not a traceback
        logging.getLogger(__name__).debug("traceback", exc_info=True)  # NEWLLM_LOG=DEBUG shows it
        print(f"error: {e}. Outputs written before this point are complete files (writes are atomic); "
              f"fix the cause and re-run `dvc repro` (training resumes from its rolling checkpoint)",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the last rolling checkpoint is kept; re-run `dvc repro` to resume",
              file=sys.stderr)
        sys.exit(130)
