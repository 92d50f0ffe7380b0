"""Stage orchestration: what each DVC stage reads, runs and writes (logic lives in newllm.*)."""
