"""DVC stage phase2_lm: Phase 2 next-token training."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("phase2_lm")
