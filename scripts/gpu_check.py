"""Every stage on a CUDA GPU through `dvc repro`, in a temporary copy of this repository.

    bash scripts/gpu_check.sh                         # Colab: 100k tokens of ultrachat_200k from the Hub
    bash scripts/gpu_check.sh --jsonl chats.jsonl     # a local file in the ultrachat_200k row schema
    bash scripts/gpu_check.sh --quick                 # the small runs only (bundled corpus, offline)

Runs, each a full `dvc repro` of the default pipeline with `runtime.device: cuda`:
small (the bundled corpus, 50 samples) and 100k tokens (781 samples), each in bf16 and fp16;
then a `kill -9` of `dvc repro` in Phase 1 and in Phase 2 of the 100k bf16 run and a
`dvc repro` that must resume (its log says "resumed phase1/phase2 after ..."). Prints per
stage the wall time, tokens/s and peak CUDA memory; exits 1 if anything failed. Needs only
what a Colab image has (git, Python with this project installed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from newllm import pipeline

ROOT = Path(__file__).resolve().parents[1]
STAGES = [(s.name, s.label) for s in pipeline.STAGES if s.timed]


def copy_repo(dst: Path) -> None:
    """Tracked and untracked (not ignored) files, in a fresh git repo: the working tree as it is."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=gpu-check", "-c", "user.email=gpu@check", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True)


def set_params(repo: Path, upd: dict) -> None:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in upd.items():
        p.setdefault(section, {}).update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def repro(repo: Path, log: Path, *args: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "a") as f:
        rc = subprocess.run([sys.executable, "-m", "dvc", "repro", *args], cwd=repo, stdout=f,
                            stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0


def stage_table(repo: Path) -> list[str]:
    rows = [f"    {'stage':20s} {'wall s':>8s} {'tok/s':>10s} {'peak CUDA MB':>13s}"]
    for stage, stem in STAGES:
        try:
            m = json.loads((repo / f"metrics/{stem}.json").read_text())
        except (OSError, ValueError):
            rows.append(f"    {stage:20s} (no metrics)")
            continue
        tps = m.get("tokens_per_s")
        rows.append(f"    {stage:20s} {m.get('time_s', float('nan')):8.1f} "
                    f"{(f'{tps:,.0f}' if tps else '-'):>10s} {m.get('peak_cuda_mb', '-')!s:>13s}")
    head = json.loads((repo / "metrics.json").read_text()) if (repo / "metrics.json").exists() else {}
    rows.append(f"    headline: {json.dumps(head)}")
    return rows


def kill_during(repo: Path, log: Path, marker: str) -> bool:
    """Start `dvc repro`, kill -9 its process group once ``marker`` (a rolling checkpoint) exists."""
    with open(log, "a") as f:
        p = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline = time.time() + 3600
    while time.time() < deadline and p.poll() is None and not (repo / marker).exists():
        time.sleep(0.05)
    if p.poll() is not None:
        return False  # finished (or failed) before a checkpoint appeared: nothing was killed
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jsonl", help="a local JSONL/Parquet file for the 100k runs (default: ultrachat from the Hub)")
    ap.add_argument("--quick", action="store_true", help="only the small runs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu + --tiny: test this script itself
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--big-samples", type=int, default=781, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; nothing to check", file=sys.stderr)
        return 2
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    big = {"source": "jsonl", "path": str(Path(args.jsonl).resolve())} if args.jsonl else {"source": "ultrachat"}
    runs = [("small bf16", {"data": {"source": "chatterbot", "num_samples": 50}, "runtime": {"precision": "bf16"}}),
            ("small fp16", {"data": {"source": "chatterbot", "num_samples": 50}, "runtime": {"precision": "fp16"}})]
    if not args.quick:
        runs += [("100k bf16", {"data": {**big, "num_samples": args.big_samples}, "runtime": {"precision": "bf16"}}),
                 ("100k fp16", {"data": {**big, "num_samples": args.big_samples}, "runtime": {"precision": "fp16"}})]
    tmp = Path(tempfile.mkdtemp(prefix="newllm-gpu-check-"))
    repo, log, failures = tmp / "repo", tmp / "dvc.log", []
    repo.mkdir()
    copy_repo(repo)
    if args.tiny:
        set_params(repo, {"model": {"context_dim": 16, "embed_dim": 16, "num_layers": 1},
                          "phase1": {"max_iterations": 4, "batch_tokens": 64}, "phase2": {"epochs": 3},
                          "transformer": {"epochs": 2}, "validate": {"cosine_pairs": 200}})
    print(f"copy: {repo} (log: {log})", flush=True)
    try:
        for name, upd in runs:
            set_params(repo, {**upd, "runtime": {**upd["runtime"], "device": args.device}})
            rc, sec = repro(repo, log)
            print(f"{name}: dvc repro exit {rc}, {sec:.1f} s wall", flush=True)
            print("\n".join(stage_table(repo)), flush=True)
            if rc:
                failures.append(name)
        if not args.quick:
            # 100k bf16 with learning rates not run yet (else DVC's run-cache would restore the stages)
            set_params(repo, {"data": {**big, "num_samples": args.big_samples},
                              "runtime": {"precision": "bf16", "device": args.device}})
            for stage, marker in (("phase1", "resume/phase1.pt"), ("phase2", "resume/phase2.pt")):
                set_params(repo, {stage: {"learning_rate": 0.0019}})  # new params: the stage must train
                killed = kill_during(repo, log, marker)
                before = log.read_text().count(f"resumed {stage} after")
                rc, sec = repro(repo, log)
                resumed = log.read_text().count(f"resumed {stage} after") > before
                print(f"kill -9 in {stage}: killed {killed}, rerun exit {rc} in {sec:.1f} s, resumed {resumed}",
                      flush=True)
                if not (killed and resumed and rc == 0):
                    failures.append(f"kill -9 in {stage}")
    finally:
        if not args.keep and not failures:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"FAILED: {', '.join(failures)}; log: {log}", file=sys.stderr)
        return 1
    print("gpu_check: all runs passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
