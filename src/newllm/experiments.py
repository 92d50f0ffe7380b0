"""Sweeps as DVC experiments: a params grid queued with ``dvc exp run --queue``, run by DVC's
queue, and compared in one artefact. ``newllm.sweep`` (any grid) and ``newllm.ladder`` (the
scale ladder, a grid over ``data.num_samples``) are the command lines on top of this.

What runs is DVC's own queue, so ``dvc exp show``, ``dvc queue status/logs``, ``dvc exp
apply`` and ``dvc metrics diff <exp> <exp>`` all see the same experiments:

1. for each point of the grid: ``dvc exp run --queue -n <name> -S key=value ... [stage]``;
2. ``dvc exp run --run-all --jobs J`` starts the queue workers and follows every log until
   the queue is empty (DVC exits 0 even when an experiment failed, so the state of each one
   is read back from ``dvc exp show --json``);
3. the comparison: one row per experiment, from ``dvc exp show --json`` (params and the
   headline metrics) and each experiment's detailed metrics files read at its revision
   through ``dvc.api.DVCFileSystem`` (they are DVC outputs, not git files).

The grid syntax is DVC's (Hydra's basic sweeper): ``-S key=a,b -S other=1,2`` is the
cartesian product. DVC itself expands it only with the ``hydra`` extra installed and names
the points ``<name>-1, -2, ...``; expanding it here checks every point against the params
rules before anything is queued and names each experiment by its values.
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from newllm.aggregate import aggregate
from newllm.config import from_dict
from newllm.errors import ConfigError, NewLLMError
from newllm.pipeline import STAGES
from newllm.values import flatten, get

log = logging.getLogger(__name__)

# the detailed metrics files the comparison reads (headline keys come from exp show), and the
# stages whose wall time it fits against the number of tokens
DETAIL_FILES = tuple(str(s.metrics) for s in STAGES if s.metrics)
TIMED_STAGES = tuple(s.label for s in STAGES if s.timed and s.name in ("phase1_fixed_point", "validate_rank",
                                                                       "phase2_lm", "transformer_lm"))


# ---------------------------------------------------------------------------
# running dvc


def dvc(*args: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dvc", *args]
    log.debug("running %s", " ".join(cmd))
    p = subprocess.run(cmd, capture_output=capture, text=True)
    if check and p.returncode != 0:
        err = (p.stderr or "").strip() if capture else ""
        raise NewLLMError(f"`dvc {' '.join(args)}` failed (exit {p.returncode})" + (f":\n{err}" if err else ""))
    return p


def exp_show(all_commits: bool = False) -> list:
    """``dvc exp show --json`` (the current commit's experiments, or every commit's with -A)."""
    p = dvc("exp", "show", "--json", *(["-A"] if all_commits else []))
    try:
        obj = json.loads(p.stdout or "[]")
    except ValueError as e:
        raise NewLLMError(f"`dvc exp show --json` printed no JSON ({e}): {p.stdout[:200]!r}") from None
    return obj if isinstance(obj, list) else []


# ---------------------------------------------------------------------------
# parsing `dvc exp show --json` (DVC 3.x): a list of baseline entries
#   {"rev": "workspace" | <sha>, "name": <branch>, "data": {...}, "error", "experiments": [
#       {"name", "executor": {"state": "success" | "failed" | "queued" | "running", ...} | None,
#        "revs": [{"rev", "name", "data": {"params": {file: {"data": {...}}},
#                                          "metrics": {file: {"data": {...}} | {"error": ...}}}, "error"}]}]}


def _entry_row(entry: dict) -> dict:
    data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
    row: dict = {}
    for file, obj in (data.get("params") or {}).items():
        prefix = "params" if Path(file).name == "params.yaml" else f"params.{file}"
        row.update(flatten((obj or {}).get("data") if isinstance(obj, dict) else None, prefix))
    errors = []
    for file, obj in (data.get("metrics") or {}).items():
        if isinstance(obj, dict) and isinstance(obj.get("data"), dict):
            row.update(flatten(obj["data"], Path(file).stem))
        elif isinstance(obj, dict) and obj.get("error"):
            errors.append(file)
    row["missing_metrics"] = ",".join(errors)
    row["timestamp"] = data.get("timestamp")
    return row


def exp_rows(show: list, include_baselines: bool = True) -> list[dict]:
    """One dict per experiment (and per baseline commit with metrics) of ``dvc exp show --json``."""
    rows: list[dict] = []
    for base in show if isinstance(show, list) else []:
        if not isinstance(base, dict):
            continue
        brev = str(base.get("rev") or "")
        if include_baselines and brev and brev != "workspace" and not base.get("error"):
            r = _entry_row(base)
            if any(k.startswith(("metrics.", "data.", "phase1.", "validate.", "phase2.")) for k in r):
                rows.append({"name": base.get("name") or brev[:7], "rev": brev, "baseline": brev,
                             "kind": "commit", "state": "success", **r})
        for exp in base.get("experiments") or []:
            if not isinstance(exp, dict):
                continue
            revs = [r for r in (exp.get("revs") or []) if isinstance(r, dict)]
            rev = revs[0] if revs else {}
            executor = exp.get("executor") if isinstance(exp.get("executor"), dict) else {}
            state = executor.get("state") or ("failed" if rev.get("error") else "success")
            name = exp.get("name") or rev.get("name") or str(rev.get("rev") or "")[:7]
            rows.append({"name": name, "rev": rev.get("rev"), "baseline": brev, "kind": "experiment",
                         "state": state, **_entry_row(rev)})
    return rows


def read_details(rows: list[dict], files: Iterable[str] = DETAIL_FILES) -> list[dict]:
    """Adds each finished row's detailed metrics (``<file stem>.<key>``), read at the row's
    revision from DVC's cache, for the files ``dvc exp show`` did not already give."""
    from dvc.api import DVCFileSystem

    for row in rows:
        if row.get("state") != "success" or not row.get("rev"):
            continue
        missing = [f for f in files if not any(k.startswith(Path(f).stem + ".") for k in row)]
        if not missing:
            continue
        try:
            fs = DVCFileSystem(".", rev=row["rev"])
        except Exception as e:  # a revision DVC cannot open: the row keeps what exp show gave
            log.warning("cannot read the metrics of %s (%s): %s", row["name"], row["rev"], e)
            continue
        for f in missing:
            try:
                row.update(flatten(json.loads(fs.read_text(f)), Path(f).stem))
            except Exception:  # a stage that did not run in this experiment, or a cache without it
                continue
    return rows


def read_row_tables(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Each finished row's per-conversation test tables (``metrics/rows/<stage>.csv``) read at its
    revision: ``{name: {stage: table}}`` (a run without them has an empty entry)."""
    from dvc.api import DVCFileSystem

    from newllm.bootstrap import parse_rows
    from newllm.compare import SOURCES
    from newllm.paths import rows_file

    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("state") != "success" or not row.get("rev"):
            continue
        tables = out.setdefault(str(row["name"]), {})
        try:
            fs = DVCFileSystem(".", rev=row["rev"])
        except Exception as e:  # a revision DVC cannot open: the run has no tables
            log.warning("cannot read the test rows of %s (%s): %s", row["name"], row["rev"], e)
            continue
        for stage in dict.fromkeys(SOURCES.values()):
            try:
                tables[stage] = parse_rows(fs.read_text(str(rows_file(stage))), f"{row['name']}:{rows_file(stage)}")
            except Exception:  # a stage that did not run in this experiment
                continue
    return out


def growth_exponent(tokens: Iterable[float], values: Iterable[float]) -> float | None:
    """Least-squares slope of log(value) against log(tokens); None with < 2 distinct token counts."""
    pts = [(math.log(t), math.log(v)) for t, v in zip(tokens, values)
           if t is not None and v is not None and t > 0 and v > 0 and math.isfinite(v)]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def frame(rows: list[dict]):
    """DataFrame of the completed rows with ``train_tokens``/``val_tokens``, sorted by tokens then name."""
    import pandas as pd

    def first(r: dict, *keys: str) -> Any:
        for k in keys:
            v = r.get(k)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                return v
        return None

    done = [dict(r) for r in rows if r.get("state") == "success"]
    for r in done:
        r["train_tokens"] = first(r, "data.train.tokens", "phase1.tokens", "validate.train.tokens", "metrics.tokens")
        r["val_tokens"] = first(r, "data.val.tokens", "phase1.val_tokens", "validate.val.tokens")
    df = pd.DataFrame([r for r in done if r["train_tokens"] is not None])
    if df.empty:
        return pd.DataFrame(columns=["name", "train_tokens"])
    df["train_tokens"] = df["train_tokens"].astype("int64")
    return df.sort_values(["train_tokens", "name"], kind="stable").reset_index(drop=True)


def varied_params(df) -> list[str]:
    """The ``params.*`` columns whose value differs between the rows (what the sweep changed)."""
    out = []
    for c in df.columns:
        if c.startswith("params.") and df[c].astype(str).nunique(dropna=False) > 1:
            out.append(c)
    return out


def check_results(names: list[str], show: list) -> list[dict]:
    """The named experiments that did not succeed (state other than success, or absent)."""
    rows = {r["name"]: r for r in exp_rows(show, include_baselines=False) if r["name"] in set(names)}
    return [rows.get(n) or {"name": n, "state": "missing"} for n in names
            if rows.get(n) is None or rows[n]["state"] != "success"]


def compare(names: list[str] | None = None, out: Path | str = "reports/sweep", all_commits: bool = False,
            prefix: str | None = None, show: list | None = None, details: bool = True,
            title: str = "new-llm: comparison of experiments") -> tuple[Path, Path, Any, list[dict]]:
    """Write ``<out>.csv``, ``<out>_by_config.csv`` and ``<out>.html`` from ``dvc exp show --json``
    (``show``: already read); returns their paths, the runs and the configurations (``aggregate``).

    ``names``: only these experiments; ``prefix``: only names starting with it; neither: every
    experiment and every baseline commit that has metrics."""
    from newllm.html.comparison import build_html, table_columns
    from newllm.io import atomic_write_text

    rows = exp_rows(exp_show(all_commits) if show is None else show, include_baselines=not names and not prefix)
    if names:
        rows = [r for r in rows if r["name"] in set(names)]
    if prefix:
        rows = [r for r in rows if str(r["name"]).startswith(prefix)]
    tables = {}
    if details:
        read_details(rows)
        tables = read_row_tables(rows)
    df = frame(rows)
    done = set(df["name"]) if "name" in df.columns else set()
    others = [r for r in rows if r["name"] not in done]
    tokens = df["train_tokens"].tolist() if "train_tokens" in df else []
    exps = {st: growth_exponent(tokens, df[f"{st}.time_s"].tolist() if f"{st}.time_s" in df else [])
            for st in TIMED_STAGES}
    out = Path(out)
    csv_path, html_path = out.with_suffix(".csv"), out.with_suffix(".html")
    cols = [c for c in table_columns(df, varied_params(df)) if c in df.columns]
    atomic_write_text(csv_path, df[cols].to_csv(index=False))
    configs = aggregate(df, tables) if not df.empty else []
    atomic_write_text(out.with_name(out.name + "_by_config.csv"), configs_csv(configs))
    atomic_write_text(html_path, build_html(df, others, exps, varied_params(df), title, csv_path.name))
    return csv_path, html_path, df, configs


def configs_csv(configs: list[dict]) -> str:
    """The configurations of ``aggregate`` as CSV: params, runs, then mean/sd/min/max of every
    figure and each baseline's paired difference with its interval and verdict."""
    import pandas as pd

    flat = []
    for c in configs:
        row = {k: v for k, v in c.items() if not k.startswith(("vs.", "tf_vs."))}
        for k, v in c.items():
            if k.startswith(("vs.", "tf_vs.")):
                row.update({f"{k}.{f}": x for f, x in v.items()})
        flat.append(row)
    return pd.DataFrame(flat).to_csv(index=False) if flat else ""


def configs_summary(configs: list[dict], varied: list[str]) -> str:
    """The configurations for the terminal: the params that differ, the number of runs, mean
    (and spread) of the headline figures, and CVFP's verdicts with their intervals."""
    if not configs:
        return "(no completed experiments)"
    lines = []
    for c in configs:
        parts = [", ".join(f"{k.removeprefix('params.')}={c.get(k)}" for k in varied
                           if k not in ("params.seed", "params.data.split_seed")) or "one configuration",
                 f"{c['runs']} run(s)"]
        for col, label in (("validate.val.er_pct", "val ER %"), ("comparison.models.cvfp.estimate", "CVFP test loss")):
            if f"{col}.mean" in c:
                parts.append(f"{label} {c[f'{col}.mean']:.4g} (sd {c[f'{col}.sd']:.2g})")
        for base in ("transformer", "mkn_trigram"):
            v = c.get(f"vs.{base}")
            if v:
                parts.append(f"vs {base} {v['estimate']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}] {v['verdict']}")
        lines.append("; ".join(parts))
    return "\n".join(lines)


def summary(df) -> str:
    """A short text table for the terminal."""
    keep = [("name", "exp"), ("train_tokens", "tokens"), ("validate.train.er_pct", "trainER%"),
            ("validate.val.er_pct", "valER%"), ("validate.final_diff", "final_diff"),
            ("validate.passed", "passed"), ("phase2.test.ppl", "test_ppl"), ("phase1.time_s", "p1_s"),
            ("phase2.time_s", "p2_s")]
    keep = [(c, lbl) for c, lbl in keep if c in df.columns]
    if df.empty or not keep:
        return "(no completed experiments)"
    return df[[c for c, _ in keep]].rename(columns=dict(keep)).to_string(index=False)


# ---------------------------------------------------------------------------
# the grid


def split_values(text: str) -> list[str]:
    """``a,b,c`` -> ['a', 'b', 'c']; a YAML list or mapping value (``[1, 2]``) is one value."""
    text = text.strip()
    if text.startswith(("[", "{")) or "," not in text:
        return [text]
    return [v.strip() for v in text.split(",")]


def parse_sets(sets: list[str]) -> list[tuple[str, list[str]]]:
    """``-S key=a,b`` options -> [(key, [a, b])], checked for form (values are checked per point)."""
    out: list[tuple[str, list[str]]] = []
    for s in sets:
        key, sep, value = s.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith(("+", "~")) or ":" in key:
            raise ConfigError("-S", s, "key=value or key=v1,v2,... with a dotted params.yaml key, "
                                       "e.g. phase1.diversity=vicreg,uniformity")
        if key in {k for k, _ in out}:
            raise ConfigError("-S", s, f"one -S per key ({key} is given twice); list its values with commas")
        values = split_values(value)
        if any(v == "" for v in values) and value.strip():
            raise ConfigError("-S", s, "comma-separated values without empty items")
        out.append((key, values))
    return out


def grid(sets: list[str]) -> list[list[tuple[str, str]]]:
    """The cartesian product of the ``-S`` options, in the order given (last key varies fastest)."""
    parsed = parse_sets(sets)
    return [list(zip([k for k, _ in parsed], combo)) for combo in itertools.product(*[v for _, v in parsed])]


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    cur = raw
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def _absolute_data_path(raw: dict, point: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Queued experiments run in copies of the repo (.dvc/tmp/exps): a relative ``data.path`` of a
    jsonl source becomes absolute (and must exist)."""
    path = get(raw, "data.path")
    if not (isinstance(path, str) and path and get(raw, "data.source") == "jsonl"):
        return point
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (Path.cwd() / p).resolve()
    if not p.exists():
        raise ConfigError("data.path", path, "an existing JSONL or Parquet file")
    _set_dotted(raw, "data.path", str(p))
    rest = [(k, v) for k, v in point if k != "data.path"]
    return rest + [("data.path", str(p))] if str(p) != path or len(rest) != len(point) else point


def plan(sets: list[str], params_path: Path = Path("params.yaml")) -> list[list[tuple[str, str]]]:
    """Every point of the grid as ``-S`` overrides, each checked against the params rules of every
    section (ConfigError naming the point before anything is queued)."""
    base = yaml.safe_load(params_path.read_text(encoding="utf-8")) if params_path.exists() else {}
    points = []
    for point in grid(sets):
        raw = copy.deepcopy(base or {})
        for key, value in point:
            _set_dotted(raw, key, yaml.safe_load(value) if value.strip() else "")
        point = _absolute_data_path(raw, point)
        try:
            from_dict(raw)
        except ConfigError as e:
            where = ", ".join(f"{k}={v}" for k, v in point if k != "data.path") or "the current params"
            raise ConfigError(e.key, e.value, f"{e.allowed} (in the sweep point {where})") from None
        points.append(point)
    return points


def point_name(prefix: str, point: list[tuple[str, str]], varying: set[str]) -> str:
    """``prefix-v1-v2``: the values of the keys that vary across the grid, made a valid git ref name."""
    vals = [v for k, v in point if k in varying]
    name = "-".join([prefix, *vals]) if vals else prefix
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    name = re.sub(r"\.{2,}", ".", name)
    return name[:100]


def existing_names(show: list) -> set[str]:
    return {r["name"] for r in exp_rows(show, include_baselines=False)}


def queue_points(points: list[list[tuple[str, str]]], names: list[str], targets: list[str], force: bool) -> None:
    """``dvc exp run --queue -n <name> -S ... [targets]`` for every point; names already used on
    this commit are refused unless ``force`` (then the experiment is replaced)."""
    clash = sorted(existing_names(exp_show()) & set(names))
    if clash and not force:
        raise NewLLMError(f"experiments {', '.join(clash)} already exist for this commit; pass --force to "
                          f"replace them (re-runs every stage), use another --name-prefix, or remove them "
                          f"with `dvc exp remove {' '.join(clash)}`")
    for point, name in zip(points, names):
        args = ["exp", "run", "--queue", "-n", name]
        for k, v in point:
            args += ["-S", f"{k}={v}"]
        if force and name in clash:
            args.append("-f")
        print(dvc(*args, *targets).stdout.strip(), flush=True)


def run_queue(jobs: int) -> None:
    print(f"running the queue: dvc exp run --run-all --jobs {jobs}", flush=True)
    dvc("exp", "run", "--run-all", "--jobs", str(jobs), capture=False, check=False)
