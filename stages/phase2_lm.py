"""DVC stage phase2_lm (code: src/newllm/stages/phase2_lm.py)."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("phase2_lm")
