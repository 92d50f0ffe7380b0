"""Saving and loading the trained models: every stage and script reads and writes them here.

- Phase 1 (``models/phase1.pt`` and its JSON sidecar ``models/phase1.json``): what Phase 1
  trained (the layers; the embedding too when it is pretrained) and the context EMA ``mu``.
  The rest of the model (a random embedding, its LayerNorm, the head) is the initialisation
  drawn from the seed, so it is rebuilt from the sidecar's config instead of stored (a few MB
  instead of two vocabulary-sized matrices); the sidecar's digest of the whole model checks
  that the rebuilt model is the one Phase 1 trained.
- Phase 2 (``models/phase2_best.pt``, the kept epoch, with a sidecar): the CVFP language
  model, with the config that rebuilds it.

Files are written atomically and read with ``weights_only=True``; whatever is wrong with one
(missing, truncated, another model's shapes, NaN weights, an edited config) is a
``CheckpointError`` that names the file and the stage that rewrites it.
"""
from __future__ import annotations

import torch

from newllm import paths
from newllm.config import ModelConfig, from_dict
from newllm.cvfp.model import CVFPModel, build_model, load_model_state
from newllm.errors import CheckpointError, ConfigError
from newllm.io import atomic_torch_save, atomic_write_json, read_json, state_dict_digest, torch_load
from newllm.runtime import Runtime


def save(path, payload: dict, sidecar: dict | None = None) -> None:
    """A model file (tensors and plain data) and, when given, its JSON sidecar (``paths.sidecar``)."""
    atomic_torch_save(payload, path)
    if sidecar is not None:
        atomic_write_json(paths.sidecar(path), sidecar)


def _model_file(path, what: str, hint: str) -> dict:
    ckpt = torch_load(path, what)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state_dict"), dict):
        raise CheckpointError(f"{what} {path} has no model_state_dict; {hint}")
    return ckpt


# ---------------------------------------------------------------------------
# Phase 1


def load_phase1(rt: Runtime) -> tuple[CVFPModel, dict]:
    """The Phase 1 model, rebuilt from its sidecar's config, and the sidecar."""
    side = read_json(paths.PHASE1_SIDECAR, "phase1 sidecar")
    rerun = "re-run `dvc repro phase1_fixed_point`"
    try:
        checked = from_dict({"seed": side["config"]["seed"], "model": side["config"]["model"],
                             "phase1": side["config"]["phase1"]}, sections=["model", "phase1"])
        mcfg, seed = checked.model, checked.seed
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"phase1 sidecar {paths.PHASE1_SIDECAR} lacks the model config ({e}); {rerun}") from None
    except ConfigError as e:
        raise CheckpointError(f"phase1 sidecar {paths.PHASE1_SIDECAR} holds an invalid config ({e.key} = "
                              f"{e.value!r}, expected {e.allowed}); it was not written by this version "
                              f"or was edited: {rerun}") from None
    ckpt = _model_file(paths.PHASE1_CKPT, "phase1 checkpoint", rerun)
    model = build_model(ModelConfig(**{**mcfg.__dict__, "pretrained_embeddings": False}), seed)
    load_model_state(model, {**model.state_dict(), **ckpt["model_state_dict"]}, f"phase1 checkpoint {paths.PHASE1_CKPT}")
    if "model_digest" in side and state_dict_digest(state_on_cpu(model)) != side["model_digest"]:
        raise CheckpointError(f"the model rebuilt from {paths.PHASE1_CKPT} and the seed is not the one Phase 1 "
                              f"trained (its digest differs from {paths.PHASE1_SIDECAR}'s: another torch draws other "
                              f"random numbers, or a file was replaced); {rerun}")
    model.embeddings_source = side.get("embeddings", "random")
    return model.to(rt.device), side


def phase1_state(model: CVFPModel) -> dict:
    """What models/phase1.pt keeps: the trained layers, and the embedding when it is pretrained
    (the seed cannot redraw it)."""
    keep = ("layers.", "embed.") if model.embeddings_source != "random" else ("layers.",)
    return {k: v for k, v in state_on_cpu(model).items() if k.startswith(keep)}


# ---------------------------------------------------------------------------
# Phase 2


def load_phase2(path, device="cpu") -> CVFPModel:
    """The CVFP language model a Phase 2 checkpoint describes, in eval mode without gradients."""
    hint = "it is not a phase2_lm checkpoint (models/phase2_best.pt); re-run `dvc repro phase2_lm`"
    ckpt = _model_file(path, "model checkpoint", hint)
    conf = ckpt.get("config")
    if not isinstance(conf, dict):
        raise CheckpointError(f"model checkpoint {path} has no config: {hint}")
    try:
        mcfg = from_dict({"model": {**conf["model"], "pretrained_embeddings": False}}, sections=["model"]).model
        head_from = (conf.get("phase2") or {}).get("predict_from", "token")
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"model checkpoint {path} has an unusable model config ({e}): {hint}") from None
    except ConfigError as e:  # checked like params: a damaged config never reaches torch
        raise CheckpointError(f"model checkpoint {path} has an invalid model config ({e.key} = {e.value!r}, "
                              f"expected {e.allowed}): {hint}") from None
    if head_from not in ("token", "context"):
        raise CheckpointError(f"model checkpoint {path}: unknown phase2.predict_from {head_from!r}: {hint}")
    model = CVFPModel(mcfg, head_from)
    load_model_state(model, ckpt["model_state_dict"], f"model checkpoint {path}")
    model.requires_grad_(False)
    return model.to(device).eval()


def phase2_payload(weights: dict, run_config: dict, history: list[dict]) -> dict:
    """The Phase 2 model file of the epoch whose ``history`` ends there."""
    return {"model_state_dict": weights, "config": run_config, "epoch": len(history),
            "phase2_history": {"train_loss": [r["train_loss"] for r in history],
                               "val_loss": [r["val_loss"] for r in history]}}


def state_on_cpu(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}
