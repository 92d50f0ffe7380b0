"""The scale ladder: a sweep over ``data.num_samples`` (x 128 tokens: 6.4k ... 100k), then the
comparison across scales (``reports/scales.html`` and ``.csv``).

    python -m newllm.ladder                                   # 50,78,195,390,781 samples
    python -m newllm.ladder --scales 50,78 --set phase2.epochs=2 --set runtime.precision=bf16
    python -m newllm.ladder --compare-only                    # the comparison again

The same as ``python -m newllm.sweep -S data.num_samples=50,78,195,390,781 --name-prefix scale``,
with each ``--set key=value`` added to every scale.
"""
from __future__ import annotations

import argparse
import sys

from newllm import sweep
from newllm.errors import ConfigError

DEFAULT_SCALES = (50, 78, 195, 390, 781)  # the original guide's ladder: x 128 tokens = 6.4k ... 100k


def parse_scales(text: str) -> list[int]:
    try:
        scales = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise ConfigError("--scales", text, "comma-separated integers >= 1, e.g. 50,78,195,390,781") from None
    if not scales or any(s < 1 for s in scales) or len(set(scales)) != len(scales):
        raise ConfigError("--scales", text, "distinct comma-separated integers >= 1, e.g. 50,78,195,390,781")
    return scales


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m newllm.ladder", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--scales", default=",".join(map(str, DEFAULT_SCALES)),
                    help="data.num_samples of each experiment (default %(default)s)")
    ap.add_argument("--set", "-S", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra params override for every scale (repeatable)")
    sweep.add_common(ap, "scale", "reports/scales")
    args = ap.parse_args(argv)
    try:
        scales = [] if args.compare_only else parse_scales(args.scales)
        if any(s.partition("=")[0].strip() == "data.num_samples" for s in args.sets):
            raise ConfigError("--set", "data.num_samples", "another key: data.num_samples is what --scales sets")
        if any("," in s.partition("=")[2] and not s.partition("=")[2].strip().startswith("[") for s in args.sets):
            raise ConfigError("--set", args.sets, "single values (a grid over other keys: python -m newllm.sweep)")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sets = [f"data.num_samples={','.join(map(str, scales))}", *args.sets] if scales else []
    return sweep.run(args, sets, varying={"data.num_samples"}, title="new-llm: comparison across scales")


if __name__ == "__main__":
    sys.exit(main())
