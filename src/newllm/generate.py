"""Text generation from a Phase 2 checkpoint (``models/phase2_best.pt``, the kept one, by default).

The prompt's tokens are fed one by one from ``c = 0``, carrying the context exactly as
in training; then each new token is the greedy argmax (``temperature == 0``) or a sample
of ``softmax(logits / temperature)`` (optionally restricted to the ``top_k`` largest
logits) drawn with a ``torch.Generator`` seeded by ``seed``, and is fed back in.

CLI::

    python -m newllm.generate --checkpoint models/phase2_best.pt --tokenizer data/tokenizer \\
        --prompt "Hello, how are you?" [--max-new-tokens 30 --temperature 0.8 --top-k 40 --seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from newllm.cvfp.checkpoint import load_phase2
from newllm.cvfp.model import CVFPModel
from newllm.data.tokenizer import END_OF_TEXT, load_tokenizer
from newllm.errors import DataError, NewLLMError


def _encode(tokenizer, prompt: str, vocab_size: int) -> list[int]:
    ids = list(tokenizer.encode(prompt, add_special_tokens=False).ids) if prompt else []
    if not ids:
        eot = tokenizer.token_to_id(END_OF_TEXT)
        if eot is None:
            raise DataError("empty prompt and the tokenizer has no <|endoftext|> token to start from")
        ids = [eot]
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise DataError(f"the prompt's token ids {bad[:5]} are outside the model's vocabulary "
                        f"[0, {vocab_size}): tokenizer and checkpoint do not belong together")
    return ids


@torch.no_grad()
def generate(model: CVFPModel, tokenizer, prompt: str, max_new_tokens: int, temperature: float = 0.0,
             top_k: int = 0, seed: int = 0) -> str:
    """The continuation text (without the prompt) of ``max_new_tokens`` tokens."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    w = model.head.weight
    dev = w.device
    ids = _encode(tokenizer, prompt, model.cfg.vocab_size)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    c = torch.zeros(1, model.cfg.context_dim, dtype=w.dtype, device=dev)
    for tok in ids[:-1]:
        c, _ = model.step(c, model.embed_tokens(torch.tensor([tok], device=dev)))
    last = ids[-1]
    out: list[int] = []
    for _ in range(max_new_tokens):
        c, x = model.step(c, model.embed_tokens(torch.tensor([last], device=dev)))
        logits = model.logits(c, x)[0].float().cpu()
        if temperature == 0:
            nxt = int(torch.argmax(logits))
        else:
            logits = logits / temperature
            if 0 < top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=0)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        out.append(nxt)
        last = nxt
    return tokenizer.decode(out)


def _here(option: str, given: str) -> str:
    """``given``, checked when relative: the defaults are paths inside the repository."""
    if not Path(given).is_absolute() and not Path(given).exists():
        raise NewLLMError(f"{option} {given} is not under the current directory {Path.cwd()}: run this from the "
                          f"repository (after `dvc repro`), or pass {option} with the path")
    return given


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m newllm.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models/phase2_best.pt", help="a phase2_lm checkpoint (default: "
                        "the kept epoch's, models/phase2_best.pt)")
    parser.add_argument("--tokenizer", default="data/tokenizer", help="directory with tokenizer.json, or the file")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0 = no top-k filter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--continuation-only", action="store_true",
                        help="print only the generated text (default: the prompt and the continuation, labelled)")
    args = parser.parse_args(argv)
    if args.max_new_tokens < 0 or args.temperature < 0 or args.top_k < 0:
        parser.error("--max-new-tokens, --temperature and --top-k must be >= 0")
    from newllm.cli import setup_logging
    setup_logging()
    try:
        model = load_phase2(_here("--checkpoint", args.checkpoint), args.device)
        tok = load_tokenizer(_here("--tokenizer", args.tokenizer))
        text = generate(model, tok, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed)
        if args.continuation_only:
            print(text)
        else:  # repr: line breaks and leading spaces stay visible, the two parts never run together
            print(f"prompt:       {args.prompt!r}\ncontinuation: {text!r}")
    except NewLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
