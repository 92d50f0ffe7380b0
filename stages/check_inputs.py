"""DVC stage check_inputs (code: src/newllm/stages/check_inputs.py)."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("check_inputs")
