"""DVC stage phase1_fixed_point (code: src/newllm/stages/phase1_fixed_point.py)."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("phase1_fixed_point")
