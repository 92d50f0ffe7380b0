"""DVC stage validate_rank (code: src/newllm/stages/validate_rank.py)."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("validate_rank")
