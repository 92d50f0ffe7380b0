"""DVC stage report: the HTML report of the run."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("report")
