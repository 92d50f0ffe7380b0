"""DVC stage validate_rank: effective rank, convergence check and verdict."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("validate_rank")
