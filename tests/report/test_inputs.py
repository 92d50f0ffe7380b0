"""The report's reading of the stages' outputs (``newllm.report.inputs``)."""
from __future__ import annotations

from newllm.config import ModelConfig
from newllm.cvfp.model import CVFPModel
from newllm.report.inputs import Inputs


def test_tied_count_is_the_models_own(tmp_path):
    """The tied count is that of a real model whose head shares the embedding matrix (the
    untied count of the default size: tests/cvfp/test_model.py)."""
    mc = ModelConfig(context_dim=8, embed_dim=6, num_layers=3, vocab_size=50)
    model = CVFPModel(mc, "token")
    model.tie_head()
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    inp = Inputs(root=tmp_path, phase2_side={"config": {"model": {**mc.__dict__, "tie_embeddings": True}}})
    assert inp.model_size()["total"] == unique
