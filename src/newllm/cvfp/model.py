"""The CVFP model ("residual_standard"), as docs/model.md describes it.

``x_t = LN_e(E[tok_t])``; each layer maps ``(c, x) -> (c', x')`` with
``h = ReLU(W [c; x] + b)``, ``c' = c + h[:d_c]``, ``x' = x + h[d_c:]`` and a LayerNorm
mix ``m``; ``F`` is the layers in sequence; the head maps the final token stream
(or the context) to vocabulary logits.
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as Fn

from newllm.config import ModelConfig
from newllm.errors import CheckpointError, NewLLMError

log = logging.getLogger(__name__)


class CVFPLayer(nn.Module):
    def __init__(self, d_c: int, d_e: int, mix: float, ln_trainable: bool):
        super().__init__()
        self.d_c, self.d_e, self.mix = d_c, d_e, mix
        self.fc = nn.Linear(d_c + d_e, d_c + d_e)
        self.ln_c = nn.LayerNorm(d_c)
        self.ln_x = nn.LayerNorm(d_e)
        for p in (*self.ln_c.parameters(), *self.ln_x.parameters()):
            p.requires_grad_(ln_trainable)

    def reset_parameters(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=gen) * 0.1)
            self.fc.bias.copy_(torch.randn(self.fc.bias.shape, generator=gen) * 0.01)
            for ln in (self.ln_c, self.ln_x):
                ln.weight.fill_(1.0)
                ln.bias.zero_()

    def _mix(self, v: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
        m = self.mix
        if m == 0.0:
            return v
        normed = ln(v)
        return normed if m == 1.0 else (1.0 - m) * v + m * normed

    def forward(self, c: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = Fn.relu(self.fc(torch.cat([c, x], dim=-1)))
        c2 = c + h[..., : self.d_c]
        x2 = x + h[..., self.d_c:]
        return self._mix(c2, self.ln_c), self._mix(x2, self.ln_x)


class CVFPModel(nn.Module):
    def __init__(self, cfg: ModelConfig, head_from: str = "token"):
        super().__init__()
        self.cfg = cfg
        self.head_from = head_from
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.ln_e = nn.LayerNorm(cfg.embed_dim)
        self.layers = nn.ModuleList(
            CVFPLayer(cfg.context_dim, cfg.embed_dim, cfg.layernorm_mix, cfg.layernorm_trainable)
            for _ in range(cfg.num_layers))
        head_dim = cfg.embed_dim if head_from == "token" else cfg.context_dim
        self.head = nn.Linear(head_dim, cfg.vocab_size)
        self.embeddings_source = "random"

    # -- construction -----------------------------------------------------------------
    def reset_parameters(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(self.embed.weight.shape, generator=gen) * 0.02)
            self.ln_e.weight.fill_(1.0)
            self.ln_e.bias.zero_()
            for layer in self.layers:
                layer.reset_parameters(gen)
            self.reset_head(gen)

    def reset_head(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=gen) * 0.02)
            self.head.bias.zero_()

    # -- forward pieces -----------------------------------------------------------------
    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The input stream ``x_t = LN_e(E[tok_t])``."""
        return self.ln_e(self.embed(tokens))

    def step(self, c: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``F_theta(c, x)``: all layers in sequence."""
        for layer in self.layers:
            c, x = layer(c, x)
        return c, x

    def logits(self, c_out: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        return self.head(x_out if self.head_from == "token" else c_out)

    def tie_head(self) -> None:
        """The head's weight becomes the embedding matrix (one parameter; the head keeps its bias)."""
        if self.head_from != "token" or self.head.weight.shape != self.embed.weight.shape:
            raise ValueError("a tied head reads the token stream (predict_from: token)")
        self.head.weight = self.embed.weight

    # -- parameter groups -----------------------------------------------------------------
    def layer_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.layers.parameters() if p.requires_grad]

    def layer_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the layers' weights (the theta_0 snapshot costs no GPU memory)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.layers.state_dict().items()}


def parameter_counts(model_cfg: dict, head_from: str = "token", tied: bool = False) -> dict:
    """Parameter counts of the CVFP model of ``model_cfg`` (formula in docs/model.md); with
    ``tied`` the head's weight is the embedding matrix, counted once (the head keeps its bias)."""
    defaults = ModelConfig()
    v = int(model_cfg.get("vocab_size", defaults.vocab_size))
    de = int(model_cfg.get("embed_dim", defaults.embed_dim))
    dc = int(model_cfg.get("context_dim", defaults.context_dim))
    n_layers = int(model_cfg.get("num_layers", defaults.num_layers))
    h = dc + de
    layers = n_layers * (h * h + h + 2 * dc + 2 * de)
    embedding = v * de
    ln_e = 2 * de
    head = v if tied else v * (de if head_from == "token" else dc) + v
    return {"total": embedding + ln_e + layers + head, "layers": layers, "embedding": embedding,
            "head": head, "ln_e": ln_e}


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n:,}"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(cfg: ModelConfig, seed: int, head_from: str = "token") -> CVFPModel:
    """A model with the spec's init; pretrained GPT-2 ``wte`` loaded (frozen) when asked."""
    model = CVFPModel(cfg, head_from)
    model.reset_parameters(seed)
    if cfg.pretrained_embeddings:
        wte = load_pretrained_wte(cfg.pretrained_name, cfg.vocab_size, cfg.embed_dim)
        with torch.no_grad():
            model.embed.weight.copy_(wte)
        model.embed.weight.requires_grad_(False)
        model.embeddings_source = f"pretrained:{cfg.pretrained_name}"
    return model


def load_pretrained_wte(name: str, vocab_size: int, embed_dim: int) -> torch.Tensor:
    """GPT-2's token embedding through ``transformers``; never a silent fallback."""
    try:
        from transformers import GPT2Model
        wte = GPT2Model.from_pretrained(name).wte.weight.detach().float().clone()
    except Exception as e:  # OSError when the Hub is unreachable, ValueError for bad ids, ...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NewLLMError(
            f"model.pretrained_embeddings is true but GPT-2 embeddings {name!r} could not be "
            f"loaded ({first}). Either make the Hugging Face Hub reachable (or set "
            f"model.pretrained_name to a local GPT-2 directory), or run with random embeddings: "
            f"`dvc exp run -S model.pretrained_embeddings=false`.") from None
    if tuple(wte.shape) != (vocab_size, embed_dim):
        raise NewLLMError(f"pretrained embeddings {name!r} have shape {tuple(wte.shape)}, but the "
                          f"model needs ({vocab_size}, {embed_dim}) (model.vocab_size, model.embed_dim)")
    log.info("loaded pretrained embeddings %s %s", name, tuple(wte.shape))
    return wte


def load_model_state(model: CVFPModel, state: dict, what: str) -> None:
    """Load weights, turning any shape/key mismatch into a CheckpointError."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what} holds no state dict of tensors; re-run the stage that writes it")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        detail = "; ".join(filter(None, [
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shape mismatch {wrong[:3]}" if wrong else ""]))
        raise CheckpointError(f"{what} does not fit the configured model ({detail}): it was made with "
                              f"another model size or vocabulary; re-run the stage that writes it")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{what} holds NaN/Inf weights ({', '.join(bad[:3])}): the run that wrote it "
                              f"diverged or the file is damaged; re-run the stage that writes it")
    model.load_state_dict(state)
