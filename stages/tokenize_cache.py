"""Stage tokenize_cache: GPT-2 token caches, the tokenizer and metrics/data.json."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("tokenize_cache")
