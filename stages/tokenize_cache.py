"""DVC stage tokenize_cache (code: src/newllm/stages/tokenize_cache.py)."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("tokenize_cache")
