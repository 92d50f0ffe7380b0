"""A params grid as DVC experiments, then the comparison of its runs.

    python -m newllm.sweep -S 'phase1.diversity=vicreg,uniformity' -S 'phase1.dist_reg_weight=0.5,0.9'
    python -m newllm.sweep -S 'model.num_layers=1,6' --stage validate_rank    # Phase 1 only
    python -m newllm.sweep --compare-only --prefix sweep                       # the comparison again

Each ``-S key=v1,v2,...`` is one axis of the grid (DVC's own ``-S`` syntax; the cartesian
product of all axes is queued). Every point is checked against the params rules before
anything is queued, then queued as ``dvc exp run --queue -n <prefix>-<values> -S ...`` and
run by DVC's queue (``dvc exp run --run-all``). The comparison (``<out>.html`` and
``<out>.csv``) has one row per experiment: the swept params, train/val effective rank
beside the untrained network's, final_diff, the verdict, Phase 2 and baseline figures, and
time. Exit status 1 when an experiment failed (``dvc queue logs <name>`` shows why).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from newllm import experiments as ex
from newllm.errors import ConfigError, NewLLMError

DEFAULT_PREFIX = "sweep"
DEFAULT_OUT = "reports/sweep"


def add_common(ap: argparse.ArgumentParser, prefix: str, out: str) -> None:
    ap.add_argument("--name-prefix", default=prefix, help="experiments are named PREFIX-<values> (default %(default)s)")
    ap.add_argument("--stage", action="append", default=[], metavar="STAGE",
                    help="run only up to this stage (dvc exp run <stage>; repeatable), e.g. validate_rank")
    ap.add_argument("--jobs", "-j", type=int, default=1, help="experiments run at once (default 1; >1 only on a GPU)")
    ap.add_argument("--force", action="store_true", help="replace experiments of the same names")
    ap.add_argument("--queue-only", action="store_true", help="queue the experiments, do not run them")
    ap.add_argument("--compare-only", action="store_true",
                    help="only write the comparison of experiments already in `dvc exp show`")
    ap.add_argument("--names", default="", help="with --compare-only: comma-separated experiment names")
    ap.add_argument("--prefix", default=None, help="with --compare-only: experiments whose name starts with this")
    ap.add_argument("--all-commits", "-A", action="store_true",
                    help="with --compare-only: experiments of every commit (dvc exp show -A)")
    ap.add_argument("--out", default=out, help="the comparison is written to OUT.html and OUT.csv (default %(default)s)")


def run(args: argparse.Namespace, sets: list[str], varying: set[str] | None = None,
        title: str = "new-llm: comparison of experiments") -> int:
    """Queue and run the grid of ``sets`` (or only compare), write the comparison; the exit status."""
    from newllm.cli import setup_logging

    setup_logging()
    try:
        if not Path("dvc.yaml").exists():
            raise NewLLMError("run this from the repository root (no dvc.yaml in the current directory)")
        if args.jobs < 1:
            raise ConfigError("--jobs", args.jobs, "an integer >= 1")
        failed: list[dict] = []
        if args.compare_only:
            names = [s for s in args.names.split(",") if s] or None
            show = ex.exp_show(args.all_commits)
            prefix = args.prefix
        else:
            if not sets:
                raise ConfigError("-S", "", "at least one key=v1,v2,... axis")
            points = ex.plan(sets)
            axes = {k for k, vals in ex.parse_sets(sets) if len(vals) > 1} if varying is None else varying
            names = [ex.point_name(args.name_prefix, p, axes) for p in points]
            if len(set(names)) != len(names):
                raise ConfigError("-S", " ".join(sets), "a grid whose points get distinct names")
            ex.queue_points(points, names, args.stage, args.force)
            if args.queue_only:
                print("queued; run them with `dvc queue start` (background; `dvc queue status` shows progress, "
                      "`dvc queue logs <name>` the output) or `dvc exp run --run-all` (waits)", flush=True)
                return 0
            ex.run_queue(args.jobs)
            show = ex.exp_show()
            failed = ex.check_results(names, show)
            prefix = None
        csv_path, html_path, df, configs = ex.compare(names, args.out, prefix=prefix, show=show, title=title)
        print(ex.summary(df))
        print("\nby configuration (runs that differ only in seed or data.split_seed):")
        print(ex.configs_summary(configs, ex.varied_params(df)))
        print(f"comparison: {html_path.resolve()}\n            {csv_path.resolve()}")
        for r in failed:
            print(f"FAILED: experiment {r['name']} ({r['state']}); its output: dvc queue logs {r['name']}",
                  file=sys.stderr)
        return 1 if failed else 0
    except NewLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m newllm.sweep", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("-S", "--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2",
                    help="one axis of the grid (repeatable); a single value is a fixed override")
    add_common(ap, DEFAULT_PREFIX, DEFAULT_OUT)
    args = ap.parse_args(argv)
    return run(args, args.sets)


if __name__ == "__main__":
    sys.exit(main())
