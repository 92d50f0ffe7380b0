"""DVC stage baselines (code: src/newllm/stages/baselines.py)."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("baselines")
