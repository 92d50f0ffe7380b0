"""Stage validate_rank: effective ranks with their references, convergence check, verdict, gate."""
from __future__ import annotations

import logging
import time

import torch

from newllm import paths, pipeline
from newllm.config import Config, Phase1Config
from newllm.cvfp import checkpoint
from newllm.cvfp.engine import Schedule
from newllm.cvfp.passes import convergence_diffs, embed_all
from newllm.cvfp.rank import (
    context_report,
    effective_rank,
    gaussian_er,
    singular_values,
)
from newllm.data.tokens import load_token_set
from newllm.errors import CheckpointError, DataError, NewLLMError
from newllm.io import atomic_write_json, atomic_write_text, torch_load
from newllm.runtime import Progress, Runtime, peak_memory

log = logging.getLogger(__name__)
SECTIONS = pipeline.sections("validate_rank")


def load_contexts(path, n_tokens: int, d_c: int) -> dict:
    obj = torch_load(path, "contexts")
    for key in ("contexts", "untrained"):
        t = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n_tokens, d_c):
            raise CheckpointError(f"contexts file {path} does not match the token cache ({key}: expected "
                                  f"({n_tokens}, {d_c})); re-run `dvc repro phase1_fixed_point`")
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"contexts file {path} holds NaN/Inf or non-float values ({key}); "
                                  f"the file is damaged: re-run `dvc repro phase1_fixed_point`")
    return obj


def run(cfg: Config) -> dict:
    t0 = time.perf_counter()
    v = cfg.validate
    rt = Runtime.from_config(cfg.runtime)
    model, side = checkpoint.load_phase1(rt)
    mcfg, p1 = model.cfg, Phase1Config(**side["config"]["phase1"])
    train = load_token_set(paths.TOKENS_TRAIN, mcfg.vocab_size)
    val = load_token_set(paths.TOKENS_VAL, mcfg.vocab_size)
    test = load_token_set(paths.TOKENS_TEST, mcfg.vocab_size)
    for path, ts in ((paths.TOKENS_TRAIN, train), (paths.TOKENS_VAL, val), (paths.TOKENS_TEST, test)):
        if ts.num_tokens < 2:  # one context has no pairwise cosine and no meaningful rank
            raise DataError(f"token cache {path} holds {ts.num_tokens} token; validate_rank needs at least 2 "
                            f"per split: raise data.num_samples or data.val_fraction")
    tc = load_contexts(paths.CONTEXTS_TRAIN, train.num_tokens, mcfg.context_dim)
    vc = load_contexts(paths.CONTEXTS_VAL, val.num_tokens, mcfg.context_dim)
    sc = load_contexts(paths.CONTEXTS_TEST, test.num_tokens, mcfg.context_dim)
    seed = int(side["config"]["seed"])
    prog = Progress("validate_rank", 9, unit="steps")
    last_pass = context_report(tc["contexts"], v.cosine_pairs, seed)
    prog.update(1)
    # the convergence check (fp32, theta frozen): 5 more passes from the last training pass;
    # the train ER is that of the contexts the frozen network then produces
    x = embed_all(model, train.tokens.to(rt.device), rt.device)
    sched = Schedule.build(train.offsets, p1.stream)
    contexts = tc["contexts"].to(rt.device)
    diffs = convergence_diffs(model, sched, x, contexts, v.convergence_passes)
    prog.update(1)
    reports = {"train": context_report(contexts, v.cosine_pairs, seed),
               "val": context_report(vc["contexts"], v.cosine_pairs, seed)}
    prog.update(2)
    reports.update(train_untrained=context_report(tc["untrained"], v.cosine_pairs, seed),
                   val_untrained=context_report(vc["untrained"], v.cosine_pairs, seed))
    prog.update(2)
    reports.update(test=context_report(sc["contexts"], v.cosine_pairs, seed),
                   test_untrained=context_report(sc["untrained"], v.cosine_pairs, seed))
    prog.update(2)
    s_input = singular_values(x)
    refs = {"input": effective_rank(s_input), "gaussian": gaussian_er(train.num_tokens, mcfg.context_dim, seed)}
    prog.update(1)
    metrics = _verdict(v, reports, last_pass, refs, diffs, mcfg, side, {"train": train, "val": val, "test": test})
    metrics["diversity"] = p1.diversity  # the sidecar's config, with the registry's default where it has none
    metrics.update(time_s=round(time.perf_counter() - t0, 2), **peak_memory(rt.device))
    atomic_write_json(paths.VALIDATE_METRICS, metrics)
    atomic_write_text(paths.CONVERGENCE, "pass,diff\n" + "".join(f"{j + 1},{x_:.8g}\n" for j, x_ in enumerate(diffs)))
    _write_spectrum(reports, s_input)
    # the gate's content changes only with the verdict or the Phase 1 model
    atomic_write_json(paths.GATE, {"passed": metrics["passed"], "phase1_model": side.get("model_digest")})
    _announce(v, metrics)
    return metrics


def _verdict(v, reports: dict, last_pass: dict, refs: dict, diffs: list[float], mcfg, side: dict, sets: dict) -> dict:
    """metrics/validate.json: the criteria (on the validation split, as the original guide defines
    them), the ranks with their references (the test split's beside), the flags."""
    tr, va = reports["train"], reports["val"]
    final_diff = diffs[-1]
    criteria = {
        # the original guide's criteria are strict: train ER > 85%, val ER > 75%, final_diff < 0.001
        "train_er": tr["er_pct"] > v.min_train_er_pct,
        "val_er": va["er_pct"] > v.min_val_er_pct,
        "final_diff": final_diff < v.max_final_diff,
    }
    d = mcfg.context_dim
    strip = lambda r: {k: val for k, val in r.items() if k != "singular_values"}  # noqa: E731
    return {
        "passed": all(criteria.values()),
        "criteria": criteria,
        "thresholds": {"min_train_er_pct": v.min_train_er_pct, "min_val_er_pct": v.min_val_er_pct,
                       "max_final_diff": v.max_final_diff},
        "train": {**strip(tr), "er_pct_untrained": reports["train_untrained"]["er_pct"],
                  "er_pct_last_pass": last_pass["er_pct"], "tokens": sets["train"].num_tokens},
        "val": {**strip(va), "er_pct_untrained": reports["val_untrained"]["er_pct"], "tokens": sets["val"].num_tokens},
        "test": {**strip(reports["test"]), "er_pct_untrained": reports["test_untrained"]["er_pct"],
                 "tokens": sets["test"].num_tokens},
        "untrained": {"train": strip(reports["train_untrained"]), "val": strip(reports["val_untrained"]),
                      "test": strip(reports["test_untrained"])},
        "input": {"er": round(refs["input"], 4), "er_pct": round(100 * refs["input"] / mcfg.embed_dim, 4)},
        "gaussian": {"er": round(refs["gaussian"], 4), "er_pct": round(100 * refs["gaussian"] / d, 4)},
        "final_diff": final_diff,
        "convergence_passes": v.convergence_passes,
        "check_precision": "fp32",
        "collapsed": bool(tr["collapsed"] or va["collapsed"]),
        "embeddings": side.get("embeddings"),
        "optimizer_steps": side.get("optimizer_steps"),
    }


def _announce(v, metrics: dict) -> None:
    """The verdict in the log: info when it passed, a warning banner when it failed."""
    tr, va, criteria = metrics["train"], metrics["val"], metrics["criteria"]
    lines = [f"validate_rank: {'PASSED' if metrics['passed'] else 'FAILED'} the original guide's criteria",
             f"  train ER {tr['er_pct']:.2f}% (> {v.min_train_er_pct}: {criteria['train_er']}; "
             f"untrained {tr['er_pct_untrained']:.2f}%, gaussian {metrics['gaussian']['er_pct']:.2f}%)",
             f"  val ER   {va['er_pct']:.2f}% (> {v.min_val_er_pct}: {criteria['val_er']}; "
             f"untrained {va['er_pct_untrained']:.2f}%); test ER {metrics['test']['er_pct']:.2f}% (reported, not a "
             f"criterion)",
             f"  final_diff {metrics['final_diff']:.6g} (< {v.max_final_diff}: {criteria['final_diff']}; fp32 check)",
             f"  collapse: train {tr['collapsed']} (mean cos {tr['mean_cos']:.3f}, |c| {tr['mean_norm']:.3g}), "
             f"val {va['collapsed']}"]
    if metrics["passed"]:
        for line in lines:
            log.info(line)
        return
    banner = "!" * 72
    for line in (banner, *lines, banner):
        log.warning(line)
    if v.enforce:
        raise NewLLMError("validate_rank: the Phase 1 model failed the original guide's criteria and "
                          "validate.enforce is true; stopping before phase2 (see metrics/validate.json)")


def _write_spectrum(reports: dict, s_input: torch.Tensor) -> None:
    """Normalised singular values p_i = s_i / sum(s) per rank index, for dvc plots."""
    cols = {name: reports[name]["singular_values"] for name in ("train", "val", "train_untrained")}
    cols["input"] = s_input
    n = max(len(c) for c in cols.values())
    norm = {k: (c / c.sum() if float(c.sum()) > 0 else c) for k, c in cols.items()}
    rows = ["rank," + ",".join(norm)]
    for i in range(n):
        rows.append(f"{i + 1}," + ",".join(f"{float(c[i]):.8g}" if i < len(c) else "" for c in norm.values()))
    atomic_write_text(paths.SPECTRUM, "\n".join(rows) + "\n")
