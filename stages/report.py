"""DVC stage report (code: src/newllm/stages/report.py)."""
from newllm.cli import stage_main

if __name__ == "__main__":
    stage_main("report")
