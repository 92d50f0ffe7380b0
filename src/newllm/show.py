"""Every detailed figure of a run, one per line: ``python -m newllm.show [PATTERN ...]``.

``dvc metrics show`` prints one column per key, which for the detailed files is thousands of
columns wide; this prints each file's name, then one ``key  value`` line per figure (the
headline ``metrics.json`` first, then ``metrics/*.json``), keeping only keys that contain one of
the PATTERNs when given:

    python -m newllm.show                 # everything
    python -m newllm.show test. verdict   # the test figures and the verdicts
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from newllm import paths
from newllm.values import flatten


def lines(root: Path, patterns: list[str]) -> list[str]:
    files = [root / paths.HEADLINE, *sorted((root / "metrics").glob("*.json"))]
    out = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        keep = [(k, v) for k, v in flatten(data, "").items() if not patterns or any(p in k for p in patterns)]
        if keep:
            width = max(len(k) for k, _ in keep)
            out += [str(f.relative_to(root))] + [f"  {k:<{width}}  {v}" for k, v in keep]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m newllm.show", description=__doc__.split("\n\n")[0])
    ap.add_argument("patterns", nargs="*", help="keep keys that contain one of these")
    ap.add_argument("--root", default=".", help="the run's directory (default: the current one)")
    args = ap.parse_args(argv)
    found = lines(Path(args.root), args.patterns)
    if not found:
        print("no metrics found (run `dvc repro` first, or check the patterns)", file=sys.stderr)
        return 1
    print("\n".join(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
