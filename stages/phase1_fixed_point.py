"""DVC stage phase1_fixed_point: Phase 1 fixed-point training."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("phase1_fixed_point")
