"""Phase 1 in the run report: the verdict against the original guide's criteria (validation
split), the criteria table with its references, the training record, the degeneracy checks and
the data of the pass, spectrum and convergence plots. Each builder returns plain values, or
``{"missing": why}`` when its input has not been written."""
from __future__ import annotations

from typing import Any

from newllm.cvfp.rank import ATTRACTOR_COS, COLLAPSE_ER_PCT, NEAR_ZERO_NORM
from newllm.report.guide import GUIDE_PHASE1, against_claim, thresholds
from newllm.report.inputs import Inputs
from newllm.values import fmt, fmt_pct, fmt_range, get, num

CRITERIA_NAMES = {"train_er": "train ER", "val_er": "validation ER", "final_diff": "final_diff"}


def _collapse_detail(v: dict) -> str:
    coll = [s for s in ("train", "val") if get(v, f"{s}.collapsed")]
    kinds = []
    for s in coll or ("train", "val"):
        why = [n for n, k in (("global attractor", "global_attractor"), ("near zero", "near_zero"))
               if get(v, f"{s}.{k}")]
        er = num(get(v, f"{s}.er_pct"))
        if er is not None and er < COLLAPSE_ER_PCT:
            why.append(f"ER {er:.2f}% < {COLLAPSE_ER_PCT:g}%")
        kinds.append(f"{s}: {', '.join(why) or 'collapsed'}")
    return "; ".join(kinds)


def _criteria_items(v: dict) -> list[dict]:
    figures = (f"train ER {fmt_pct(get(v, 'train.er_pct'))}, validation ER {fmt_pct(get(v, 'val.er_pct'))}, "
               f"final_diff {fmt(num(v.get('final_diff')), 3)}")
    if v.get("passed"):
        items = [{"level": "ok", "short": "the original guide's criteria are met", "detail": figures}]
    else:
        failed = [CRITERIA_NAMES.get(k, k) for k, ok in (v.get("criteria") or {}).items() if not ok]
        items = [{"level": "bad", "short": f"the original guide's criteria are NOT met "
                                           f"({', '.join(failed) or 'see the table'})", "detail": figures}]
    if v.get("collapsed") or any(get(v, f"{s}.collapsed") for s in ("train", "val")):
        items.append({"level": "bad", "short": "contexts COLLAPSED", "detail": _collapse_detail(v)})
    return items


def verdict(inp: Inputs) -> dict:
    """Phase 1's verdict against the original guide's criteria, and nothing else: Phase 2 has its
    own line, so that the banner's colour means one thing. {line, level: ok|warn|bad, items}."""
    if inp.validate is None:
        items = [{"level": "warn", "short": "verdict not available", "detail": inp.why("validate")}]
    else:
        items = _criteria_items(inp.validate)
    steps = inp.first(("phase1", "optimizer_steps"), ("validate", "optimizer_steps"),
                      ("phase1_side", "optimizer_steps"))
    no_step = steps is not None and num(steps) == 0
    if no_step:
        items.append({"level": "bad", "short": "NO optimizer step was taken",
                      "detail": "its ranks are those of the untrained network (the original code's guard bug)"})
    if num(get(inp.phase1, "param_change")) == 0 and not no_step:
        items.append({"level": "bad", "short": "the parameters did not change", "detail": "param_change is 0"})
    levels = [it["level"] for it in items]
    level = "bad" if "bad" in levels else ("warn" if "warn" in levels else "ok")
    head = {"bad": "FAILED", "warn": "INCOMPLETE", "ok": "PASSED"}[level]
    shown = [it["short"] for it in items if it["level"] == level]
    return {"line": f"Phase 1 {head}: " + "; ".join(shown), "level": level, "items": items}


def _er_text(v: dict, split: str, d_c: Any) -> str:
    s = fmt_pct(get(v, f"{split}.er_pct"))
    if num(get(v, f"{split}.er")) is not None and d_c:
        s += f" (ER {fmt(num(get(v, f'{split}.er')))} of {d_c})"
    return s


def _decided(v: dict, key: str, value: float | None, ok_if) -> bool | None:
    crit = v.get("criteria") or {}
    if key in crit:
        return bool(crit[key])
    return None if value is None else ok_if(value)


def _criteria_rows(inp: Inputs, v: dict) -> list[dict]:
    th, d_c = thresholds(inp), (inp.model_cfg() or {}).get("context_dim")
    t_er, v_er, s_er, fd = (num(get(v, "train.er_pct")), num(get(v, "val.er_pct")), num(get(v, "test.er_pct")),
                            num(v.get("final_diff")))
    g_t, g_v = GUIDE_PHASE1["train_er_pct"], GUIDE_PHASE1["val_er_pct"]
    ok_f = _decided(v, "final_diff", fd, lambda x: x <= th["max_final_diff"])
    ok_t = _decided(v, "train_er", t_er, lambda x: x >= th["min_train_er_pct"])
    return [
        {"name": "train ER", "threshold": f"> {fmt(th['min_train_er_pct'])}%", "value": t_er,
         "measured": _er_text(v, "train", d_c), "ok": ok_t,
         "references": f"untrained θ₀ {fmt_pct(get(v, 'train.er_pct_untrained'))}; input stream x "
                       f"{fmt_pct(get(v, 'input.er_pct'))}; Gaussian {fmt_pct(get(v, 'gaussian.er_pct'))}",
         "claim": fmt_range(*g_t, "%"), "vs_claim": against_claim(t_er, *g_t, "%")},
        {"name": "validation ER", "threshold": f"> {fmt(th['min_val_er_pct'])}%", "value": v_er,
         "measured": _er_text(v, "val", d_c), "ok": _decided(v, "val_er", v_er, lambda x: x >= th["min_val_er_pct"]),
         "references": f"untrained θ₀ {fmt_pct(get(v, 'val.er_pct_untrained'))}",
         "claim": fmt_range(*g_v, "%"), "vs_claim": against_claim(v_er, *g_v, "%")},
        {"name": "final_diff", "threshold": f"< {fmt(th['max_final_diff'])}", "value": fd,
         "measured": fmt(fd, 3) + (" (trivial: the contexts collapsed)" if ok_f and v.get("collapsed") else ""),
         "ok": ok_f, "references": f"mean ‖c^j − c^(j−1)‖ after {fmt(v.get('convergence_passes'))} frozen passes; "
                                   "original code: 33.6", "claim": None, "vs_claim": None},
        {"name": "test ER (reference)", "threshold": "not a criterion", "value": s_er,
         "measured": _er_text(v, "test", d_c) if s_er is not None else "—", "ok": None,
         "references": f"untrained θ₀ {fmt_pct(get(v, 'untrained.test.er_pct', get(v, 'test.er_pct_untrained')))}",
         "claim": None, "vs_claim": None},
    ]


def _training_rows(inp: Inputs) -> list[dict]:
    p1 = inp.phase1 or {}
    d_c = (inp.model_cfg() or {}).get("context_dim")
    steps = inp.first(("phase1", "optimizer_steps"), ("validate", "optimizer_steps"))
    change = num(get(p1, "param_change"))
    frac = num(get(p1, "final_converged_frac"))
    return [
        {"label": "optimizer steps", "value": steps, "bad": num(steps) == 0,
         "note": "never trained" if num(steps) == 0 else "0 would mean the original guard bug: ranks of an "
                                                           "untrained network"},
        {"label": "relative parameter change ‖θ−θ₀‖/‖θ₀‖", "value": change, "bad": change == 0,
         "note": "unchanged" if change == 0 else ""},
        {"label": "passes", "value": get(p1, "passes"),
         "note": f"the original guide's claim: convergence in {fmt_range(*GUIDE_PHASE1['passes'])} passes"},
        {"label": "final CVFP loss", "value": num(get(p1, "final_cvfp_loss")),
         "note": f"the original guide's claim: {fmt_range(*GUIDE_PHASE1['cvfp_loss'])}"},
        {"label": "final converged fraction", "value": None if frac is None else 100 * frac, "unit": "%", "note": ""},
        {"label": "final mean context norm", "value": num(get(p1, "final_context_norm")),
         "note": f"√d_c = {d_c ** 0.5:.3g} with LayerNorm scale 1" if d_c else ""},
    ]


DEGENERACY_SPLITS = (("train", "train"), ("val", "validation"), ("test", "test"),
                     ("untrained.train", "train, untrained θ₀"), ("untrained.val", "validation, untrained θ₀"),
                     ("untrained.test", "test, untrained θ₀"))


def _degeneracy(v: dict) -> dict:
    splits = [(key, label) for key, label in DEGENERACY_SPLITS if isinstance(get(v, key), dict)]
    specs = ((f"global attractor (mean cos > {ATTRACTOR_COS:g})", "global_attractor", True),
             (f"near zero (mean norm < {NEAR_ZERO_NORM:g})", "near_zero", True),
             (f"collapsed (either, or ER < {COLLAPSE_ER_PCT:g}%)", "collapsed", True),
             ("mean pairwise cosine", "mean_cos", False), ("mean context norm", "mean_norm", False))
    rows = [{"label": label, "flag": is_flag,
             "values": [get(v, f"{key}.{k}") if is_flag else num(get(v, f"{key}.{k}")) for key, _ in splits]}
            for label, k, is_flag in specs]
    return {"columns": [label for _, label in splits], "rows": rows}


def criteria(inp: Inputs) -> dict:
    v = inp.validate
    if v is None:
        return {"missing": inp.why("validate")}
    return {"rows": _criteria_rows(inp, v), "passed": bool(v.get("passed")),
            "thresholds_recorded": thresholds(inp)["recorded"], "training": _training_rows(inp),
            "degeneracy": _degeneracy(v)}


def passes(inp: Inputs) -> dict:
    """The pass curves' columns, and the diversity objective that ran (its name and formula)."""
    h = inp.passes
    if h is None:
        return {"missing": inp.why("passes")}
    n = len(next(iter(h.values())))
    conv = h.get("converged_frac")
    ratio = num(get(inp.phase1_side, "config.phase1.min_converged_ratio"))
    return {"x": h.get("pass_index") or list(range(n)), "cvfp_loss": h.get("cvfp_loss"), "div_loss": h.get("div_loss"),
            "converged_pct": None if conv is None else [None if y is None else 100 * y for y in conv],
            "mean_context_norm": h.get("mean_context_norm"), "diversity": inp.diversity(),
            "min_ratio_pct": None if ratio is None else 100 * ratio}


SPECTRUM_LABELS = {"train": ("train (trained θ)", "train.er_pct"), "val": ("validation (trained θ)", "val.er_pct"),
                   "test": ("test (trained θ)", "test.er_pct"),
                   "train_untrained": ("train, untrained θ₀", "train.er_pct_untrained"),
                   "input": ("input stream x", "input.er_pct")}


def spectrum(inp: Inputs) -> dict:
    s = inp.spectrum
    if s is None:
        return {"missing": inp.why("spectrum")}
    rank = s.get("rank") or list(range(1, len(next(iter(s.values()))) + 1))
    lines = []
    for col, ys in s.items():
        if col == "rank":
            continue
        label, key = SPECTRUM_LABELS.get(col, (col, ""))
        lines.append({"column": col, "label": label, "er_pct": num(get(inp.validate, key)) if key else None,
                      "values": ys})
    return {"rank": rank, "lines": lines}


def convergence(inp: Inputs) -> dict:
    c = inp.convergence
    if c is None:
        return {"missing": inp.why("convergence")}
    if c.get("pass") is None or c.get("diff") is None:
        return {"missing": "metrics/convergence.csv lacks the columns pass,diff"}
    return {"pass": c["pass"], "diff": c["diff"], "threshold": num(get(inp.validate, "thresholds.max_final_diff")),
            "exact_zero": any(y is not None and y <= 0 for y in c["diff"])}
