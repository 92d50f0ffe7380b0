"""Test data for the run report: the report stage's data for a run, per-conversation test losses
of a chosen shape, a tiny CVFP checkpoint with a word tokenizer, and reading the HTML back."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from newllm import paths
from newllm.bootstrap import rows_csv
from newllm.config import Config, ReportConfig

VERDICT_WORDS = ("better", "worse", "not distinguishable")


def config(seed: int = 0, **report) -> Config:
    base = dict(max_new_tokens=5)
    base.update(report)
    return Config(seed=seed, report=ReportConfig(**base))


def gather(root: Path, seed: int = 0, **report) -> tuple[dict, dict]:
    """The report stage's comparison and data for the run in ``root``."""
    from newllm.stages import report as stage
    return stage.gather(config(seed, **report), Path(root))


def render(data: dict) -> str:
    from newllm.html.run_report import build_report
    return build_report(data)


def rows_by_key(data: dict) -> dict:
    """The report's Phase 2 table rows by model key."""
    return {r["key"]: r for r in data["phase2"]["models"]}


def edit_json(root: Path, rel: Path, **changes) -> dict:
    """Set dotted keys of a metrics file (``train__er_pct=1`` sets ``train.er_pct``)."""
    p = root / rel
    obj = json.loads(p.read_text())
    for key, value in changes.items():
        *parents, last = key.split("__")
        cur = obj
        for part in parents:
            cur = cur.setdefault(part, {})
        cur[last] = value
    p.write_text(json.dumps(obj))
    return obj


def write_rows(root: Path, conversations: int = 40, targets: int = 10, **offsets: float) -> None:
    """Per-conversation test CE for every model: CVFP at 5 nats per token plus a varying part, each
    other model at CVFP's plus ``offsets[name]`` nats per token. A string offset ``"±d"`` alternates
    +d and −d between conversations, so that its mean difference is 0 and the interval holds 0."""
    n = [targets] * conversations
    cvfp = [targets * (5.0 + 0.3 * (r % 7)) for r in range(conversations)]

    def column(off) -> list[float]:
        if isinstance(off, str):
            d = float(off.lstrip("±"))
            return [c + (d if r % 2 else -d) * targets for r, c in enumerate(cvfp)]
        return [c + off * targets for c in cvfp]

    base = {"row": list(range(conversations)), "targets": n}
    files = {"phase2": {"cvfp": cvfp}, "transformer": {"transformer": column(offsets["transformer"])},
             "baselines": {m: column(offsets[m]) for m in ("unigram", "kn_bigram", "kn_trigram", "mkn_trigram")}}
    for stage, cols in files.items():
        (root / paths.rows_file(stage)).write_text(rows_csv({**base, **cols}))


WORDS = ["[UNK]", "hello", "how", "are", "you", "?", "fine", "the", "capital", "paris", "<|endoftext|>"]


def tiny_checkpoint(root: Path, vocab_size: int = len(WORDS)) -> None:
    """A real Phase 2 model file (random weights) and a word-level tokenizer of WORDS; with a
    smaller ``vocab_size`` the model cannot read the last words."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    from newllm.config import ModelConfig
    from newllm.cvfp.model import build_model

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (root / paths.TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
    tok.save(str(root / paths.TOKENIZER_DIR / "tokenizer.json"))
    mc = ModelConfig(context_dim=8, embed_dim=8, num_layers=1, vocab_size=vocab_size)
    conf = {"seed": 0, "model": dataclasses.asdict(mc), "phase2": {"predict_from": "token"}}
    (root / "models").mkdir(exist_ok=True)
    torch.save({"model_state_dict": build_model(mc, seed=0).state_dict(), "config": conf, "epoch": 1},
               root / paths.PHASE2_BEST)


def section_of(html: str, anchor: str) -> str:
    start = html.index(f'id="{anchor}"')
    return html[start:html.index("</section>", start)]


def text_of(html: str) -> str:
    """Visible text (tags and inline images removed, entities kept)."""
    return re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]+"', "", html))


def has_remote_refs(html_text: str) -> bool:
    """True when the HTML references a network resource (src/href/url() with a scheme or //)."""
    return bool(re.search(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//"""
                          r"""|url\(\s*["']?\s*(?:https?:)?//|@import""", html_text, re.I))
