"""The scale ladder as DVC experiments, and the comparison across scales.

    python -m newllm.experiments                                   # 50,78,195,390,781 samples, then compare
    python -m newllm.experiments --scales 50,78 --set phase2.epochs=2 --set runtime.precision=bf16
    python -m newllm.experiments --compare-only                    # reports/scales.{html,csv} from `dvc exp show`

What it runs is exactly DVC's own queue (so ``dvc exp show``, ``dvc queue status/logs``,
``dvc exp apply`` and ``dvc metrics diff <exp> <exp>`` all see the same experiments):

1. for each scale N: ``dvc exp run --queue -n <prefix>-N -S data.num_samples=N [-S key=value ...]``;
2. ``dvc exp run --run-all --jobs J``: starts the queue workers and follows every
   experiment's log until the queue is empty. (DVC exits 0 even when an experiment
   failed, so this script then reads each experiment's state from ``dvc exp show --json``
   and exits 1 naming the failures and ``dvc queue logs <name>`` for their output.)
3. the comparison (``--compare-only`` does only this): ``dvc exp show --json`` flattened
   with pandas into one row per experiment, written as ``reports/scales.csv`` and
   ``reports/scales.html`` (tables and plots of the headline metrics against the
   training token count; the plot helpers and style of ``newllm.html.run_report``).

Every ``--set`` is checked (with each scale) against the params rules before anything is
queued. Queued experiments run in temporary copies of the repo under ``.dvc/tmp/exps``,
so a relative ``data.path`` is made absolute here (``-S data.path=/abs/path``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from newllm.config import from_dict
from newllm.errors import ConfigError, NewLLMError

log = logging.getLogger(__name__)

DEFAULT_SCALES = (50, 78, 195, 390, 781)  # the guide's ladder: x 128 tokens = 6.4k ... 100k
DEFAULT_PREFIX = "scale"
OUT_HTML = Path("reports/scales.html")
OUT_CSV = Path("reports/scales.csv")

# Columns of scales.csv and the HTML table, in order: (column, label in the HTML table).
# Metric columns are "<metrics file stem>.<key>", params are "params.<key>".
COLUMNS: list[tuple[str, str]] = [
    ("name", "experiment"),
    ("params.data.num_samples", "num_samples"),
    ("params.data.max_seq_length", "max_seq_length"),
    ("params.data.source", "source"),
    ("train_tokens", "train tokens"),
    ("val_tokens", "val tokens"),
    ("validate.train.er_pct", "train ER %"),
    ("validate.train.er_pct_untrained", "train ER % untrained"),
    ("validate.val.er_pct", "val ER %"),
    ("validate.val.er_pct_untrained", "val ER % untrained"),
    ("validate.input.er_pct", "input ER %"),
    ("validate.gaussian.er_pct", "Gaussian ER %"),
    ("validate.final_diff", "final_diff"),
    ("validate.passed", "passed"),
    ("validate.collapsed", "collapsed"),
    ("phase1.passes", "P1 passes"),
    ("phase1.optimizer_steps", "P1 steps"),
    ("phase1.param_change", "P1 param change"),
    ("phase2.val.loss", "val loss"),
    ("phase2.val.ppl", "val ppl"),
    ("phase2.val.acc", "val acc"),
    ("phase2.train.loss", "train loss"),
    ("phase2.baseline.unigram_loss", "unigram loss"),
    ("phase2.baseline.unigram_ppl", "unigram ppl"),
    ("phase2.baseline.bigram_loss", "bigram loss"),
    ("phase2.baseline.bigram_ppl", "bigram ppl"),
    ("phase2.baseline.majority_acc", "majority acc"),
    ("phase2.beats_unigram", "beats unigram"),
    ("phase2.beats_bigram", "beats bigram"),
    ("phase1.time_s", "phase1 s"),
    ("validate.time_s", "validate s"),
    ("phase2.time_s", "phase2 s"),
    ("phase1.tokens_per_s", "P1 tok/s"),
    ("phase2.tokens_per_s", "P2 tok/s"),
    ("phase1.peak_rss_mb", "P1 RSS MB"),
    ("validate.peak_rss_mb", "validate RSS MB"),
    ("phase2.peak_rss_mb", "P2 RSS MB"),
    ("phase1.peak_cuda_mb", "P1 CUDA MB"),
    ("validate.peak_cuda_mb", "validate CUDA MB"),
    ("phase2.peak_cuda_mb", "P2 CUDA MB"),
    ("params.model.context_dim", "d_c"),
    ("params.model.embed_dim", "d_e"),
    ("params.model.num_layers", "L"),
    ("params.runtime.precision", "precision"),
    ("phase1.device", "device"),
    ("rev", "rev"),
    ("baseline", "baseline"),
]
# stages whose metrics record wall time / peak memory (fetch, tokenize and report do not)
TIMED_STAGES = ("phase1", "validate", "phase2")


# ---------------------------------------------------------------------------
# running dvc


def _dvc(*args: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dvc", *args]
    log.debug("running %s", " ".join(cmd))
    p = subprocess.run(cmd, capture_output=capture, text=True)
    if check and p.returncode != 0:
        err = (p.stderr or "").strip() if capture else ""
        raise NewLLMError(f"`dvc {' '.join(args)}` failed (exit {p.returncode})" + (f":\n{err}" if err else ""))
    return p


def exp_show(all_commits: bool = False) -> list:
    """``dvc exp show --json`` (the current commit's experiments, or every commit's with -A)."""
    p = _dvc("exp", "show", "--json", *(["-A"] if all_commits else []))
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


def _flat(d: Any, prefix: str) -> dict:
    """Nested dict -> {prefix.a.b: scalar} (pandas.json_normalize); lists and dicts dropped."""
    import pandas as pd

    if not isinstance(d, dict) or not d:
        return {}
    row = pd.json_normalize(d, sep=".").iloc[0].to_dict()
    out = {}
    for k, v in row.items():
        if isinstance(v, (list, dict, tuple)):
            continue
        out[f"{prefix}.{k}"] = v.item() if hasattr(v, "item") else v
    return out


def _entry_row(entry: dict) -> dict:
    data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
    row: dict = {}
    for file, obj in (data.get("params") or {}).items():
        prefix = "params" if Path(file).name == "params.yaml" else f"params.{file}"
        row.update(_flat((obj or {}).get("data") if isinstance(obj, dict) else None, prefix))
    errors = []
    for file, obj in (data.get("metrics") or {}).items():
        if isinstance(obj, dict) and isinstance(obj.get("data"), dict):
            row.update(_flat(obj["data"], Path(file).stem))
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
            if any(k.startswith(("data.", "phase1.", "validate.", "phase2.")) for k in r):
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


def _first(row: dict, *keys: str) -> Any:
    for k in keys:
        v = row.get(k)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            return v
    return None


def scales_frame(rows: list[dict]):
    """DataFrame of the completed rows, sorted by training tokens, with derived columns."""
    import pandas as pd

    done = [r for r in rows if r.get("state") == "success"]
    df = pd.DataFrame(done)
    if df.empty:
        return pd.DataFrame(columns=[c for c, _ in COLUMNS])
    df["train_tokens"] = [_first(r, "data.train.tokens", "phase1.tokens", "validate.train.tokens")
                          for r in df.to_dict("records")]
    df["val_tokens"] = [_first(r, "data.val.tokens", "phase1.val_tokens", "validate.val.tokens")
                        for r in df.to_dict("records")]
    df = df[df["train_tokens"].notna()].copy()
    df["train_tokens"] = df["train_tokens"].astype("int64")
    return df.sort_values(["train_tokens", "name"], kind="stable").reset_index(drop=True)


def growth_exponent(tokens: Iterable[float], values: Iterable[float]) -> float | None:
    """Least-squares slope of log(value) against log(tokens); None with < 2 distinct token counts."""
    pts = [(math.log(t), math.log(v)) for t, v in zip(tokens, values)
           if t is not None and v is not None and t > 0 and v > 0 and math.isfinite(v)]
    xs = {x for x, _ in pts}
    if len(xs) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


# ---------------------------------------------------------------------------
# the comparison artefacts


def _col(df, name: str) -> list:
    from newllm.html.run_report import num

    if name not in df.columns:
        return [None] * len(df)
    return [num(v) for v in df[name].tolist()]


def _plot_series(ax, xs: list, ys: list, label: str, color: str, style: str = "o-") -> bool:
    pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if not pts:
        return False
    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=label, markersize=5)
    return True


def short_count(n: float) -> str:
    """6400 -> '6.4k', 100000 -> '100k', 1500000 -> '1.5M'."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def _finish(ax, title: str, ylabel: str = "", logy: bool = False) -> None:
    from matplotlib.ticker import NullFormatter

    from newllm.html.run_report import _empty

    ax.set_title(title, fontsize=10)
    ax.set_xlabel("training tokens (log scale)", fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    ax.set_xscale("log")
    xs = sorted({float(x) for line in ax.lines if line.get_transform() == ax.transData  # not axhline
                 for x in line.get_xdata()})
    if 0 < len(xs) <= 10:  # one labelled tick per scale, no log-minor clutter
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(xs, [short_count(x) for x in xs])
    if logy:
        ax.set_yscale("log")
    if ax.lines:
        ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    else:
        _empty(ax)


def _phase1_plot(df) -> str:
    from newllm.html.run_report import _figure, _hline, img, num

    x = _col(df, "train_tokens")
    fig, (ax_er, ax_fd) = _figure(1, 2, height=3.8)
    for col, color, style, label in (("validate.train.er_pct", "#1f5fa8", "o-", "train ER"),
                                     ("validate.train.er_pct_untrained", "#1f5fa8", "s--", "train ER, untrained θ₀"),
                                     ("validate.val.er_pct", "#2e8b57", "o-", "val ER"),
                                     ("validate.val.er_pct_untrained", "#2e8b57", "s--", "val ER, untrained θ₀"),
                                     ("validate.gaussian.er_pct", "#888888", ":", "Gaussian matrix")):
        _plot_series(ax_er, x, _col(df, col), label, color, style)
    th_t = next((v for v in _col(df, "validate.thresholds.min_train_er_pct") if v is not None), 85.0)
    th_v = next((v for v in _col(df, "validate.thresholds.min_val_er_pct") if v is not None), 75.0)
    if ax_er.lines:
        _hline(ax_er, th_t, f"criterion train > {th_t:g}%", "#c0392b")
        _hline(ax_er, th_v, f"criterion val > {th_v:g}%", "#c0392b", ":")
    _finish(ax_er, "effective rank (% of d_c)", "ER %")
    fd = [None if v is None or v <= 0 else v for v in _col(df, "validate.final_diff")]
    _plot_series(ax_fd, x, fd, "final_diff", "#1f5fa8")
    th_fd = next((v for v in _col(df, "validate.thresholds.max_final_diff") if v is not None), 0.001)
    if ax_fd.lines and num(th_fd):
        _hline(ax_fd, th_fd, f"criterion < {th_fd:g}", "#c0392b")
    _finish(ax_fd, "convergence check: final_diff", "mean ‖c^j − c^(j−1)‖", logy=True)
    return img(fig, "Phase 1 metrics against training tokens")


def _phase2_plot(df) -> str:
    from newllm.html.run_report import _figure, acc_scale, img

    x = _col(df, "train_tokens")
    fig, (ax_l, ax_p, ax_a) = _figure(1, 3, height=3.8)
    for ax, key, title, logy in ((ax_l, "loss", "validation loss", False),
                                 (ax_p, "ppl", "validation perplexity", True)):
        _plot_series(ax, x, _col(df, f"phase2.val.{key}"), "model (last epoch)", "#2e8b57")
        _plot_series(ax, x, _col(df, f"phase2.baseline.unigram_{key}"), "unigram", "#c0392b", "s--")
        _plot_series(ax, x, _col(df, f"phase2.baseline.bigram_{key}"), "bigram", "#8e44ad", "^:")
        _finish(ax, title, key, logy=logy)
    acc, maj = _col(df, "phase2.val.acc"), _col(df, "phase2.baseline.majority_acc")
    s = acc_scale(*acc, *maj)
    _plot_series(ax_a, x, [None if v is None else v * s for v in acc], "model (last epoch)", "#2e8b57")
    _plot_series(ax_a, x, [None if v is None else v * s for v in maj], "majority token", "#c0392b", "s--")
    _finish(ax_a, "validation top-1 accuracy", "%")
    return img(fig, "Phase 2 metrics against training tokens")


def _cost_plot(df, exps: dict) -> str:
    from newllm.html.run_report import _figure, img

    x = _col(df, "train_tokens")
    colors = {"phase1": "#1f5fa8", "validate": "#e67e22", "phase2": "#2e8b57"}
    fig, (ax_t, ax_s, ax_m) = _figure(1, 3, height=3.8)
    for st in TIMED_STAGES:
        e = exps.get(st)
        _plot_series(ax_t, x, _col(df, f"{st}.time_s"),
                     st + (f" (∝ N^{e:.2f})" if e is not None else ""), colors[st])
        _plot_series(ax_m, x, _col(df, f"{st}.peak_rss_mb"), f"{st} host RSS", colors[st])
        _plot_series(ax_m, x, _col(df, f"{st}.peak_cuda_mb"), f"{st} CUDA", colors[st], "s--")
    for st in ("phase1", "phase2"):
        _plot_series(ax_s, x, _col(df, f"{st}.tokens_per_s"), st, colors[st])
    _finish(ax_t, "wall time per stage", "s", logy=True)
    _finish(ax_s, "training throughput", "tokens/s")
    _finish(ax_m, "peak memory", "MB")
    return img(fig, "time, throughput and memory against training tokens")


def _cell(col: str, v: Any, acc_s: float) -> str:
    from newllm.html.run_report import fmt, num

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return '<td class="pass">yes</td>' if v else '<td class="fail">no</td>'
    if col.endswith(".acc") or col.endswith("majority_acc"):
        return f"{num(v) * acc_s:.2f}%" if num(v) is not None else str(v)
    if col == "rev" or col == "baseline":
        return str(v)[:7]
    if col.endswith("final_diff") or col.endswith("param_change"):
        return fmt(num(v), 3)
    return fmt(int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else v)


def build_html(df, others: list[dict], exps: dict, title: str = "new-llm: comparison across scales") -> str:
    from newllm.html.run_report import CSS, acc_scale, esc, fmt, na, section, table

    cols = [(c, lbl) for c, lbl in COLUMNS if c in df.columns and df[c].notna().any()]
    acc_s = acc_scale(*_col(df, "phase2.val.acc"), *_col(df, "phase2.baseline.majority_acc"))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title>", f"<style>{CSS}\ntable.wide{{font-size:.78em;}}</style></head>"
             "<body><main>", f"<h1>{esc(title)}</h1>"]
    n = len(df)
    parts.append(f'<p class="note">{n} completed run(s) from <code>dvc exp show --json</code>, sorted by '
                 f'training tokens; the same rows are in <code>{esc(OUT_CSV)}</code>. Every figure is the '
                 f'stage\'s own metrics file of that experiment (<code>dvc metrics diff &lt;exp&gt; '
                 f'&lt;exp&gt;</code> shows any pair). Phase 2 figures are the last epoch.</p>')
    if n == 0:
        parts.append(section("table", "Runs", na("no completed experiment with metrics")))
    else:
        head = [lbl for _, lbl in cols]
        rows = [[_cell(c, r.get(c), acc_s) for c, _ in cols] for r in df.to_dict("records")]
        parts.append(section("table", "Runs", table(head, rows, "criteria wide")))
        parts.append(section("phase1", "Phase 1 fixed point against scale", _phase1_plot(df)
                             + '<p class="note">Dashed: the same effective rank with the untrained θ₀ — a '
                               'trained model is only interesting where it differs from it. Red lines: the '
                               'seed\'s criteria.</p>'))
        parts.append(section("phase2", "Phase 2 against the baselines", _phase2_plot(df)))
        exp_rows_html = [[st, "—" if e is None else f"{e:.2f}",
                          fmt(len([v for v in _col(df, f"{st}.time_s") if v is not None]))]
                         for st, e in exps.items()]
        parts.append(section("cost", "Time, throughput and peak memory", _cost_plot(df, exps)
                             + table(["stage", "growth exponent of wall time (log-log least squares)", "runs"],
                                     exp_rows_html, "criteria")
                             + '<p class="note">An exponent near 1 is linear scaling in the number of training '
                               'tokens (with the same number of passes/epochs; early stopping changes the work '
                               'per run). A stage\'s time_s includes its set-up (loading inputs, building the model), '
                               'which flattens the exponent at small scales. fetch_ultrachat, tokenize_cache and '
                               'report do not record timings; bench/bench_scaling.py measures every stage.'
                               '</p>'))
    if others:
        rows = [[str(o.get("name")), str(o.get("state")), str(o.get("rev") or "")[:7],
                 f"dvc queue logs {o.get('name')}"] for o in others]
        parts.append(section("others", "Experiments without results",
                             table(["experiment", "state", "rev", "its log"], rows, "criteria")))
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def compare(names: list[str] | None = None, out_dir: Path | str = "reports", all_commits: bool = False,
            prefix: str | None = None, show: list | None = None) -> tuple[Path, Path, Any]:
    """Write ``scales.csv`` and ``scales.html`` under ``out_dir`` from ``dvc exp show --json``.

    ``names``: only these experiments; ``prefix``: only experiments whose name starts with it;
    neither: every experiment and every baseline commit that has metrics."""
    from newllm.io import atomic_write_text

    rows = exp_rows(exp_show(all_commits) if show is None else show,
                    include_baselines=not names and not prefix)
    if names:
        rows = [r for r in rows if r["name"] in set(names)]
    if prefix:
        rows = [r for r in rows if str(r["name"]).startswith(prefix)]
    df = scales_frame(rows)
    done = set(df["name"]) if "name" in df.columns else set()
    others = [r for r in rows if r["name"] not in done]
    exps = {st: growth_exponent(_col(df, "train_tokens"), _col(df, f"{st}.time_s")) for st in TIMED_STAGES}
    out_dir = Path(out_dir)
    csv_path, html_path = out_dir / OUT_CSV.name, out_dir / OUT_HTML.name
    cols = [c for c, _ in COLUMNS if c in df.columns]
    atomic_write_text(csv_path, df[cols].to_csv(index=False))
    atomic_write_text(html_path, build_html(df, others, exps))
    return csv_path, html_path, df


def summary(df) -> str:
    """A short text table for the terminal."""
    keep = [("name", "exp"), ("train_tokens", "tokens"), ("validate.train.er_pct", "trainER%"),
            ("validate.val.er_pct", "valER%"), ("validate.final_diff", "final_diff"),
            ("phase2.val.ppl", "val_ppl"), ("phase2.baseline.unigram_ppl", "uni_ppl"),
            ("phase2.val.acc", "val_acc"), ("phase1.time_s", "p1_s"), ("validate.time_s", "val_s"),
            ("phase2.time_s", "p2_s")]
    keep = [(c, lbl) for c, lbl in keep if c in df.columns]
    if df.empty or not keep:
        return "(no completed experiments)"
    return df[[c for c, _ in keep]].rename(columns=dict(keep)).to_string(index=False)


# ---------------------------------------------------------------------------
# queueing the ladder


def parse_scales(text: str) -> list[int]:
    try:
        scales = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise ConfigError("--scales", text, "comma-separated integers >= 1, e.g. 50,78,195,390,781") from None
    if not scales or any(s < 1 for s in scales) or len(set(scales)) != len(scales):
        raise ConfigError("--scales", text, "distinct comma-separated integers >= 1, e.g. 50,78,195,390,781")
    return scales


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    cur = raw
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def _get_dotted(raw: dict, key: str) -> Any:
    cur: Any = raw
    for p in key.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def plan(scales: list[int], sets: list[str], params_path: Path = Path("params.yaml")) -> list[str]:
    """The ``-S`` overrides shared by every scale, checked against the params rules for each
    scale (ConfigError before anything is queued); a relative ``data.path`` becomes absolute."""
    import copy

    raw = yaml.safe_load(params_path.read_text(encoding="utf-8")) if params_path.exists() else {}
    raw = raw or {}
    overrides: list[str] = []
    for s in sets:
        key, sep, value = s.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith(("+", "~")) or ":" in key:
            raise ConfigError("--set", s, "key=value with a dotted params.yaml key, e.g. phase2.epochs=2")
        if key == "data.num_samples":
            raise ConfigError("--set", s, "another key: data.num_samples is what --scales sets")
        parsed = yaml.safe_load(value) if value.strip() else ""
        _set_dotted(raw, key, parsed)
        if key != "data.path":
            overrides.append(f"{key}={value}")
    path = _get_dotted(raw, "data.path")
    path_set = next((s.partition("=")[2] for s in sets if s.partition("=")[0].strip() == "data.path"), None)
    if isinstance(path, str) and path and _get_dotted(raw, "data.source") == "jsonl":
        p = Path(path).expanduser()
        if not p.is_absolute():
            p = (Path.cwd() / p).resolve()
            log.info("data.path %s is relative; experiments run in .dvc/tmp/exps, so it is passed as %s",
                     path, p)
        if not p.exists():
            raise ConfigError("data.path", path, "an existing JSONL or Parquet file")
        if str(p) != path or path_set is not None:
            overrides.append(f"data.path={p}")
        _set_dotted(raw, "data.path", str(p))
    elif path_set is not None:
        overrides.append(f"data.path={path_set}")
    for n in scales:
        scaled = copy.deepcopy(raw)
        _set_dotted(scaled, "data.num_samples", n)
        from_dict(scaled)  # every section, as the stages will
    return overrides


def existing_names(show: list) -> set[str]:
    return {r["name"] for r in exp_rows(show, include_baselines=False)}


def run_ladder(scales: list[int], sets: list[str], prefix: str, jobs: int, force: bool,
               queue_only: bool) -> list[str]:
    """Queue one experiment per scale and (unless ``queue_only``) run the queue; returns the names."""
    overrides = plan(scales, sets)
    names = [f"{prefix}-{n}" for n in scales]
    clash = sorted(existing_names(exp_show()) & set(names))
    if clash and not force:
        raise NewLLMError(f"experiments {', '.join(clash)} already exist for this commit; pass --force to "
                          f"replace them (re-runs every stage), use another --name-prefix, or remove them "
                          f"with `dvc exp remove {' '.join(clash)}`")
    for n, name in zip(scales, names):
        args = ["exp", "run", "--queue", "-n", name, "-S", f"data.num_samples={n}"]
        for o in overrides:
            args += ["-S", o]
        if force and name in clash:
            args.append("-f")
        p = _dvc(*args)
        print(p.stdout.strip(), flush=True)
    if queue_only:
        print("queued; run them with `dvc queue start` (background; `dvc queue status` shows progress, "
              "`dvc queue logs <name>` the output) or `dvc exp run --run-all` (waits)", flush=True)
        return names
    print(f"running the queue: dvc exp run --run-all --jobs {jobs}", flush=True)
    _dvc("exp", "run", "--run-all", "--jobs", str(jobs), capture=False, check=False)
    return names


def check_results(names: list[str], show: list) -> list[dict]:
    """The ladder's experiments that did not succeed (state other than success, or no metrics)."""
    rows = {r["name"]: r for r in exp_rows(show, include_baselines=False) if r["name"] in set(names)}
    bad = []
    for name in names:
        r = rows.get(name)
        if r is None:
            bad.append({"name": name, "state": "missing"})
        elif r["state"] != "success":
            bad.append(r)
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m newllm.experiments", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default=",".join(map(str, DEFAULT_SCALES)),
                    help="data.num_samples of each experiment (default %(default)s)")
    ap.add_argument("--set", "-S", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra params override for every scale, passed to `dvc exp run -S` (repeatable)")
    ap.add_argument("--name-prefix", default=DEFAULT_PREFIX, help="experiments are named PREFIX-N")
    ap.add_argument("--jobs", "-j", type=int, default=1, help="experiments run at once (default 1)")
    ap.add_argument("--force", action="store_true", help="replace experiments of the same names")
    ap.add_argument("--queue-only", action="store_true", help="queue the experiments, do not run them")
    ap.add_argument("--compare-only", action="store_true",
                    help="only write the comparison of the experiments already in `dvc exp show`")
    ap.add_argument("--names", default="", help="with --compare-only: comma-separated experiment names")
    ap.add_argument("--all-commits", "-A", action="store_true",
                    help="with --compare-only: experiments of every commit (dvc exp show -A)")
    ap.add_argument("--out-dir", default=str(OUT_HTML.parent), help="where scales.html/csv go")
    args = ap.parse_args(argv)
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
            show = exp_show(args.all_commits)
        else:
            names = run_ladder(parse_scales(args.scales), args.sets, args.name_prefix, args.jobs, args.force,
                               args.queue_only)
            if args.queue_only:
                return 0
            show = exp_show()
            failed = check_results(names, show)
        csv_path, html_path, df = compare(names, args.out_dir, show=show)
        print(summary(df))
        print(f"comparison: {html_path.resolve()}\n            {csv_path.resolve()}")
        if failed:
            for r in failed:
                print(f"FAILED: experiment {r['name']} ({r['state']}); its output: dvc queue logs {r['name']}",
                      file=sys.stderr)
            return 1
        return 0
    except NewLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
