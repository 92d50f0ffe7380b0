"""The run report's text samples: continuations of ``report.prompts`` by the kept Phase 2
checkpoint (``newllm.generate``). A prompt that fails becomes an error string for that prompt;
a missing or unreadable checkpoint or tokenizer makes the whole section "not available"."""
from __future__ import annotations

import logging
from pathlib import Path

from newllm import paths
from newllm.config import ReportConfig
from newllm.cvfp.checkpoint import load_phase2
from newllm.data.tokenizer import load_tokenizer
from newllm.errors import NewLLMError
from newllm.generate import generate

log = logging.getLogger(__name__)


def settings(cfg: ReportConfig, seed: int) -> dict:
    mode = ("greedy (temperature 0)" if cfg.temperature == 0 else
            f"sampled: temperature {cfg.temperature:g}, top_k {cfg.top_k or 'off'}, random seed {seed}")
    return {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_k": cfg.top_k,
            "seed": seed, "mode": mode, "checkpoint": str(paths.PHASE2_BEST)}


def text_samples(root: Path | str, cfg: ReportConfig, seed: int) -> dict:
    """{settings, items: [{prompt, continuation, error}]}, or {missing: why}."""
    root = Path(root)
    ckpt, tok_dir = root / paths.PHASE2_BEST, root / paths.TOKENIZER_DIR
    if not ckpt.exists():
        return {"missing": f"{paths.PHASE2_BEST} is missing (stage phase2_lm has not run)"}
    if not cfg.prompts:
        return {"missing": "report.prompts is empty"}
    try:
        tokenizer = load_tokenizer(tok_dir)
        model = load_phase2(ckpt, device="cpu")
    except NewLLMError as e:
        log.warning("report: no generated continuations: %s", e)
        return {"missing": str(e)}
    items = []
    for prompt in cfg.prompts:
        try:
            text = generate(model, tokenizer, prompt, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, top_k=cfg.top_k, seed=seed)
            items.append({"prompt": prompt, "continuation": text, "error": None})
        except Exception as e:  # one failing prompt does not hide the others
            items.append({"prompt": prompt, "continuation": None, "error": f"{type(e).__name__}: {e}"})
    return {"settings": settings(cfg, seed), "items": items}
