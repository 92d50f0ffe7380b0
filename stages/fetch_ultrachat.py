"""DVC stage fetch_ultrachat (code: src/newllm/stages/fetch_ultrachat.py)."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("fetch_ultrachat")
