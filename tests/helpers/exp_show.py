"""What ``dvc exp show --json`` prints for a few experiments (DVC 3.67's shape, captured from a real
run and trimmed): finished, queued and failed ones, for the comparison tests without a queue."""
from __future__ import annotations


def entry(rev: str, name: str | None, n: int, tokens: int | None, p1_time: float = 1.0,
           diversity: str = "ema_distance") -> dict:
    metrics = {"metrics/data.json": {"error": {"type": "FileNotFoundError", "msg": "x"}}}
    if tokens is not None:
        metrics = {
            "metrics/data.json": {"data": {"train": {"tokens": tokens, "samples": n}, "val": {"tokens": tokens // 4}}},
            "metrics/phase1.json": {"data": {"tokens": tokens, "time_s": p1_time, "peak_rss_mb": 300.0}},
            "metrics/validate.json": {"data": {"train": {"er_pct": 80.0, "er_pct_untrained": 85.0},
                                               "val": {"er_pct": 70.0}, "final_diff": 0.5, "passed": False}},
            "metrics/phase2.json": {"data": {"val": {"loss": 7.0, "ppl": 1096.6, "acc": 0.12},
                                             "test": {"loss": 7.0, "ppl": 1096.6, "acc": 0.12}}},
        }
    return {"rev": rev, "name": name, "error": None,
            "data": {"rev": rev, "timestamp": None, "metrics": metrics,
                     "params": {"params.yaml": {"data": {"data": {"num_samples": n, "source": "jsonl"},
                                                         "phase1": {"diversity": diversity},
                                                         "report": {"prompts": ["a", "b"]}}}}}}


def exp_show() -> list:
    """The shape of DVC 3.67's `dvc exp show --json` (captured from a real run, trimmed)."""
    return [
        {**entry("workspace", None, 50, 6400), "experiments": None},
        {**entry("c" * 40, "master", 50, None), "experiments": [
            {"name": "scale-78", "executor": {"state": "success", "name": "dvc-task", "local": {}},
             "revs": [entry("b" * 40, "scale-78", 78, 9984, 2.0, "uniformity")]},
            {"name": "scale-50", "executor": None, "revs": [entry("a" * 40, "scale-50", 50, 6400, 1.0)]},
            {"name": "scale-999", "executor": {"state": "failed"},
             "revs": [{**entry("d" * 40, "scale-999", 999, None), "error": {"msg": "Experiment run failed"}}]},
            {"name": "scale-1", "executor": {"state": "queued"}, "revs": [entry("e" * 40, "scale-1", 1, None)]},
        ]},
    ]
