"""Stage fetch_ultrachat: conversations (train, validation) into data/raw/."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("fetch_ultrachat")
