"""Which Phase 1 settings collapse? Trains Phase 1 under a few variants of the defaults on the
same tokens and prints, per variant, the figures validate_rank judges (docs/metrics.md): effective
rank of the training and validation contexts beside the untrained network's, final_diff
(5 frozen passes), mean pairwise cosine, mean context norm, relative parameter change,
optimizer steps and time. Not a test: it prints what it measured, whatever that is.

    python bench/bench_collapse.py                                  # 50 samples (6.4k tokens), 768/6, fp32
    python bench/bench_collapse.py --samples 781 --precision bf16   # 100k tokens
    python bench/bench_collapse.py --variants default,ln_frozen

Each variant changes one thing from params.yaml's defaults (see VARIANTS). The seed's
criteria are train ER > 85%, validation ER > 75%, final_diff < 0.001.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import chat_tokens  # noqa: E402

from newllm.config import ModelConfig, Phase1Config, ValidateConfig  # noqa: E402
from newllm.cvfp.engine import Schedule  # noqa: E402
from newllm.cvfp.model import build_model  # noqa: E402
from newllm.cvfp.passes import convergence_diffs, embed_all, frozen_passes  # noqa: E402
from newllm.cvfp.phase1 import Phase1Trainer, relative_change  # noqa: E402
from newllm.cvfp.rank import context_report  # noqa: E402
from newllm.runtime import Runtime  # noqa: E402

# name -> (model overrides, phase1 overrides, what it tests)
VARIANTS = {
    "default": ({}, {}, "params.yaml as shipped"),
    "ln_frozen": ({"layernorm_trainable": False}, {}, "LayerNorm scale/shift frozen: norm of c = sqrt(d_c), L_div bounded"),
    "no_div": ({}, {"dist_reg_weight": 0.0}, "w = 0: the fixed-point loss alone"),
    "w0.1": ({}, {"dist_reg_weight": 0.1}, "w = 0.1"),
    "w0.9": ({}, {"dist_reg_weight": 0.9}, "w = 0.9"),
    "lr2e-4": ({}, {"learning_rate": 2e-4}, "learning rate / 10"),
    "full_batch": ({}, {"batch_tokens": 0}, "one optimizer step per pass"),
    "online": ({}, {"batch_tokens": 1}, "an Adam step per token (the original algorithm; slow)"),
    "ln_frozen_no_div": ({"layernorm_trainable": False}, {"dist_reg_weight": 0.0}, "both"),
}
DEFAULT_SET = "default,ln_frozen,no_div,w0.1,lr2e-4,full_batch,ln_frozen_no_div"


def run_variant(name: str, train, val, base_model: ModelConfig, precision: str, seed: int) -> dict:
    m_over, p_over, _ = VARIANTS[name]
    mcfg = dataclasses.replace(base_model, **m_over)
    pcfg = dataclasses.replace(Phase1Config(), **p_over)
    rt = Runtime(torch.device("cpu"), precision)
    model = build_model(mcfg, seed=seed)
    theta0 = model.layer_state()
    t0 = time.perf_counter()
    tr = Phase1Trainer(model, train.tokens, train.offsets, pcfg, rt, seed=seed)
    val_sched = Schedule.build(val.offsets, pcfg.stream)
    val_x = embed_all(model, val.tokens, rt.device)
    val_untrained = frozen_passes(model, val_sched, val_x, 1)
    st = tr.run()
    val_ctx = frozen_passes(model, val_sched, val_x, st.done)
    ctx = tr.ctx
    t_train = time.perf_counter() - t0
    v = ValidateConfig()
    rep = {k: context_report(c, v.cosine_pairs, seed) for k, c in
           (("train", ctx.prev_ctx), ("val", val_ctx), ("train0", ctx.untrained_ctx), ("val0", val_untrained))}
    x = embed_all(model, train.tokens, rt.device)
    diffs = convergence_diffs(model, Schedule.build(train.offsets, pcfg.stream), x, ctx.prev_ctx.clone(),
                              v.convergence_passes)
    last = st.history[-1]
    return {"name": name, "train_er": rep["train"]["er_pct"], "train_er0": rep["train0"]["er_pct"],
            "val_er": rep["val"]["er_pct"], "val_er0": rep["val0"]["er_pct"], "final_diff": diffs[-1],
            "cos": rep["train"]["mean_cos"], "norm": rep["train"]["mean_norm"],
            "conv": last["converged_frac"], "cvfp": last["cvfp_loss"],
            "change": relative_change(theta0, model.layer_state()), "steps": st.steps,
            "passes": st.done, "time_s": t_train,
            "passed": (rep["train"]["er_pct"] > v.min_train_er_pct and rep["val"]["er_pct"] > v.min_val_er_pct
                       and diffs[-1] < v.max_final_diff),
            "collapsed": rep["train"]["collapsed"] or rep["val"]["collapsed"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--context-dim", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=DEFAULT_SET, help=f"comma-separated, of: {', '.join(VARIANTS)}")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    base = ModelConfig(context_dim=args.context_dim, embed_dim=args.context_dim, num_layers=args.layers)
    train, val = chat_tokens(args.samples)
    print(f"Phase 1 variants: {train.num_tokens} training / {val.num_tokens} validation tokens, model "
          f"{base.context_dim}/{base.embed_dim}/{base.num_layers}, {args.precision}, seed {args.seed}, "
          f"{torch.get_num_threads()} threads. Seed's criteria: train ER > 85%, val ER > 75%, final_diff < 0.001")
    print("| variant | what changes | train ER % (untrained) | val ER % (untrained) | final_diff | mean cos "
          "| mean norm | converged | param change | steps | passes | time s | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        r = run_variant(name, train, val, base, args.precision, args.seed)
        verdict = "PASSED" if r["passed"] else ("FAILED, collapsed" if r["collapsed"] else "FAILED")
        print(f"| {name} | {VARIANTS[name][2]} | {r['train_er']:.2f} ({r['train_er0']:.2f}) | "
              f"{r['val_er']:.2f} ({r['val_er0']:.2f}) | {r['final_diff']:.3g} | {r['cos']:.3f} | "
              f"{r['norm']:.1f} | {100 * r['conv']:.0f}% | {r['change']:.3f} | {r['steps']} | {r['passes']} | "
              f"{r['time_s']:.0f} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
