"""The CVFP model's size (``newllm.cvfp.model``)."""
from __future__ import annotations

from newllm.config import ModelConfig
from newllm.cvfp.model import build_model, count_parameters, parameter_counts


def test_default_size_parameter_count():
    """The original guide's size (six layers, 768 wide, GPT-2 vocabulary): 91,429,969 parameters,
    counted on the built model and from the config alone."""
    model = build_model(ModelConfig(num_layers=6), seed=0)
    assert count_parameters(model) == 91_429_969
    assert parameter_counts({"context_dim": 768, "embed_dim": 768, "num_layers": 6, "vocab_size": 50257})["total"] \
        == 91_429_969
