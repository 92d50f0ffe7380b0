"""DVC stage transformer_lm (code: src/newllm/stages/transformer_lm.py)."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("transformer_lm")
