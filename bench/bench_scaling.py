"""Scaling benchmark: wall time and peak RSS of every pipeline stage against the token count.

    python bench/bench_scaling.py --threads 1                       # 25k..425k tokens, 768/768/6, bf16
    python bench/bench_scaling.py --model-dim 64 --scales small     # a quick trial (~1-2 min)
    python bench/bench_scaling.py --seq-lengths 32,64 --json out.json

Each scale is a fresh working directory with its own ``params.yaml``: ``data.source:
jsonl`` on ``../shared/data/chat_sample.jsonl``, ``--samples`` conversations (781 by
default) truncated to ``max_seq_length`` tokens: 781 x 32/64/128/256/768 gives 25k/50k/99k/
193k/425k training tokens (the file holds 1.75 M tokens untruncated; at 512 many
conversations are shorter, so 781 x 512 is only 335k; the table shows the real count).

Every stage runs as the real stage script (``stages/<stage>.py``) in its own subprocess,
one after the other, exactly as ``dvc repro`` would run it; its wall time is measured
around the process and its peak RSS is the process's own ``ru_maxrss`` (``os.wait4``, so
one stage's peak does not hide the next one's), with its CPU time (user + sys, from the same
``wait4``; on a machine shared with other jobs the wall time follows their load, the CPU time
much less so). For phase1/validate/phase2 the stage's
own ``time_s`` (from its metrics file: work only, without interpreter start-up and
imports) is shown too.

A fixed amount of work per token: ``phase1.max_iterations`` (default 2: the untrained pass 0
and one training pass, ``min_converged_ratio`` 1.0 so no early stop), ``phase2.epochs``
(default 1), ``validate.convergence_passes`` (default 5, the pipeline's). Growth exponent
of a stage = least-squares slope of log(time) against log(training tokens); 1.0 is linear.
Target: every stage <= 1.1 and the largest scale within the machine's RAM.

On a machine shared with other jobs use ``--threads 1``: with ``runtime.threads: 0`` (all
cores, 2 here) and other jobs on the cores, Phase 1 at 25k tokens took 245 s instead of 78 s
(threads waiting on each other), and the CPU time then counts that waiting as work.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAT_SAMPLE = ROOT.parent / "shared" / "data" / "chat_sample.jsonl"
STAGES = ["fetch_ultrachat", "tokenize_cache", "phase1_fixed_point", "validate_rank", "phase2_lm", "report"]
SHORT = {"fetch_ultrachat": "fetch", "tokenize_cache": "tokenize", "phase1_fixed_point": "phase1",
         "validate_rank": "validate", "phase2_lm": "phase2", "report": "report"}
METRICS = {"phase1_fixed_point": "metrics/phase1.json", "validate_rank": "metrics/validate.json",
           "phase2_lm": "metrics/phase2.json"}
PRESETS = {"full": [32, 64, 128, 256, 768], "small": [8, 16, 32]}


def growth_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (None with < 2 distinct x)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def params_for(args: argparse.Namespace, seq: int) -> dict:
    return {
        "seed": 0,
        "data": {"source": "jsonl", "path": str(CHAT_SAMPLE), "num_samples": args.samples,
                 "val_fraction": 0.2, "max_seq_length": seq, "tokenizer": "gpt2-offline"},
        "model": {"context_dim": args.model_dim, "embed_dim": args.model_dim, "num_layers": args.layers},
        "phase1": {"max_iterations": args.p1_iterations, "min_converged_ratio": 1.0},
        "validate": {"convergence_passes": args.convergence_passes},
        "phase2": {"epochs": args.p2_epochs},
        "runtime": {"device": "cpu", "precision": args.precision, "threads": args.threads},
        "resume": {"enabled": True},
    }


def run_stage(stage: str, work: Path, log_file) -> dict:
    """The stage script in its own process: wall time, the process's own peak RSS, exit code."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log_file.write(f"\n===== {stage} =====\n")
    log_file.flush()
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=work, env=env,
                         stdout=log_file, stderr=subprocess.STDOUT)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen consistent
    rss_kb = ru.ru_maxrss if sys.platform != "darwin" else ru.ru_maxrss / 1024
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": rss_kb / 1024,
            "returncode": p.returncode}


def bench_scale(args: argparse.Namespace, seq: int, base: Path) -> dict:
    work = base / f"seq{seq}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params_for(args, seq), sort_keys=False))
    out: dict = {"max_seq_length": seq, "stages": {}}
    with open(work / "bench.log", "w", encoding="utf-8") as log_file:
        for stage in STAGES:
            r = run_stage(stage, work, log_file)
            if stage in METRICS and (work / METRICS[stage]).exists():
                m = json.loads((work / METRICS[stage]).read_text())
                r["stage_time_s"] = m.get("time_s")
            out["stages"][stage] = r
            print(f"  seq {seq:>4} {stage:<19} {r['wall_s']:8.1f} s  CPU {r['cpu_s']:8.1f} s  "
                  f"peak RSS {r['peak_rss_mb']:8.0f} MB"
                  + (f"  (stage's own time_s {r['stage_time_s']:.1f} s)" if r.get("stage_time_s") else "")
                  + (f"  FAILED exit {r['returncode']}, see {work / 'bench.log'}" if r["returncode"] else ""),
                  flush=True)
            if r["returncode"]:
                out["failed"] = stage
                break
    data = json.loads((work / "metrics/data.json").read_text()) if (work / "metrics/data.json").exists() else {}
    out["train_tokens"] = (data.get("train") or {}).get("tokens")
    out["val_tokens"] = (data.get("val") or {}).get("tokens")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


def table(results: list[dict]) -> str:
    ok = [r for r in results if r.get("train_tokens")]
    toks = [r["train_tokens"] for r in ok]
    head = f"{'stage':<10}" + "".join(f"{t:>12,}" for t in toks) + f"{'exponent':>10}"
    lines = ["wall time (s) per stage, by training tokens (validation tokens: "
             + ", ".join(f"{r['val_tokens']:,}" for r in ok) + ")", head]

    def row(label: str, key: str, stage: str, fmt: str) -> str | None:
        vals = [r["stages"].get(stage, {}).get(key) for r in ok]
        if all(v is None for v in vals):
            return None
        e = growth_exponent([float(t) for t, v in zip(toks, vals) if v], [float(v) for v in vals if v])
        cells = "".join(f"{'—':>12}" if v is None else f"{v:>12{fmt}}" for v in vals)
        return f"{label:<10}" + cells + (f"{e:>10.2f}" if e is not None else f"{'—':>10}")

    for stage in STAGES:
        lines.append(row(SHORT[stage], "wall_s", stage, ".1f"))
    lines.append("")
    lines.append("CPU time (s, user + sys of the stage's process: the work, less sensitive to other jobs "
                 "on a shared machine)")
    lines.append(head)
    for stage in STAGES:
        lines.append(row(SHORT[stage], "cpu_s", stage, ".1f"))
    lines.append("")
    lines.append("work only, wall (the stage's own time_s: no interpreter start-up, imports, or file writes after it)")
    lines.append(head)
    for stage in METRICS:
        r = row(SHORT[stage], "stage_time_s", stage, ".1f")
        if r:
            lines.append(r)
    lines.append("")
    lines.append("peak RSS (MB) per stage")
    lines.append(head)
    for stage in STAGES:
        lines.append(row(SHORT[stage], "peak_rss_mb", stage, ",.0f"))
    return "\n".join(x for x in lines if x is not None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", choices=list(PRESETS), default="full",
                    help="max_seq_length preset: full = 32,64,128,256,768 (25k..425k tokens), small = 8,16,32")
    ap.add_argument("--seq-lengths", default="", help="explicit comma-separated max_seq_length values")
    ap.add_argument("--samples", type=int, default=781, help="training conversations (data.num_samples)")
    ap.add_argument("--model-dim", type=int, default=768, help="d_c = d_e")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
    ap.add_argument("--threads", type=int, default=0, help="runtime.threads (0 = all cores)")
    ap.add_argument("--p1-iterations", type=int, default=2, help="phase1.max_iterations (pass 0 included)")
    ap.add_argument("--p2-epochs", type=int, default=1, help="phase2.epochs")
    ap.add_argument("--convergence-passes", type=int, default=5, help="validate.convergence_passes")
    ap.add_argument("--workdir", default="", help="where the per-scale directories go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep each scale's directory (outputs, bench.log)")
    ap.add_argument("--json", default="", help="also write the raw figures to this file")
    args = ap.parse_args()
    if not CHAT_SAMPLE.exists():
        print(f"skipped: {CHAT_SAMPLE} is absent (the shared sample exists only on the development machines)")
        return 0
    seqs = [int(s) for s in args.seq_lengths.split(",") if s] if args.seq_lengths else PRESETS[args.scales]
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"scaling benchmark: {args.samples} samples x max_seq_length {seqs}, model "
          f"{args.model_dim}/{args.model_dim}/{args.layers}, {args.precision}, phase1.max_iterations "
          f"{args.p1_iterations}, phase2.epochs {args.p2_epochs}, validate.convergence_passes "
          f"{args.convergence_passes}, {os.cpu_count()} CPUs, work in {base}", flush=True)
    t0 = time.perf_counter()
    results = []
    for seq in seqs:
        r = bench_scale(args, seq, base)
        results.append(r)
        if r.get("failed"):
            print(f"stopping: {r['failed']} failed at max_seq_length {seq}", flush=True)
            break
    print()
    print(table(results))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    if not args.workdir and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if any(r.get("failed") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
