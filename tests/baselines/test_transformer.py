"""The same-size transformer baseline (``newllm.baselines.transformer``): causal, sized by the
CVFP budget, its fused head's gradients are plain autograd's, it learns, stops early at its best
epoch and resumes exactly."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from helpers.toy import from_lists, random_tokens
from newllm.baselines.transformer import (
    TransformerLM,
    TransformerTrainer,
    block_parameters,
    cvfp_layer_parameters,
    resolve_shape,
    sequences,
)
from newllm.config import TransformerConfig
from newllm.runtime import Runtime

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = Runtime(torch.device("cpu"), "fp32")


def test_transformer_is_causal_and_sized_by_the_cvfp_budget():
    model = TransformerLM(30, 16, 2, 2, 4, 12, 0.0, False, seed=0).eval()
    a = torch.randint(0, 30, (2, 12), generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[:, 7:] = (b[:, 7:] + 1) % 30  # change the future
    with torch.no_grad():
        fa, fb = model.features(a), model.features(b)
    assert torch.allclose(fa[:, :7], fb[:, :7], atol=1e-6) and not torch.allclose(fa[:, 7:], fb[:, 7:])
    # 768-wide: one block (7.09 M) is the nearest whole number to 1 CVFP layer (2.36 M); 6 layers -> 2 blocks
    assert cvfp_layer_parameters(768, 768, 6) == 6 * 2_363_904 and block_parameters(768, 4) == 7_087_872
    assert resolve_shape(TransformerConfig(), 768, 768, 6) == (2, 12)
    assert resolve_shape(TransformerConfig(), 768, 768, 1) == (1, 12)
    assert resolve_shape(TransformerConfig(), 16, 16, 2) == (1, 1)
    tied = TransformerLM(30, 16, 1, 2, 4, 12, 0.0, True, seed=0)
    assert tied.head.weight is tied.embed.weight


def _trainer(epochs: int, **cfg) -> TransformerTrainer:
    tr, va = random_tokens(3, (12,) * 8, vocab=25), random_tokens(4, (12,) * 3, vocab=25)
    c = TransformerConfig(epochs=epochs, batch_tokens=36, chunk_tokens=7, learning_rate=0.01, **cfg)
    model = TransformerLM(25, 16, 1, 2, 4, 12, c.dropout, c.tie_embeddings, seed=1)
    return TransformerTrainer(model, sequences(tr.tokens, tr.offsets, "sample", 12),
                              sequences(va.tokens, va.offsets, "sample", 12), c, CPU, seed=5)


@pytest.mark.parametrize("tie", [True, False])
def test_transformer_step_gradients_equal_plain_autograd(tie):
    """The trainer's fused head (chunked, into reused buffers) and its embedding lookup give the
    gradients of ``F.cross_entropy`` over the plain model, step after step (the buffers are
    reused, not stale), tied and untied."""
    from torch.nn import functional as Fn

    tr = _trainer(1, tie_embeddings=tie, dropout=0.0)
    plain = copy.deepcopy(tr.model)
    for step in range(3):
        x, y = tr.train_x[3 * step:3 * step + 3], tr.train_y[3 * step:3 * step + 3]
        n = int((y >= 0).sum())
        tr.opt.zero_grad(set_to_none=step == 0)
        tr._loss_backward(x, y, n)
        plain.zero_grad(set_to_none=True)
        logits = plain.head(plain.features(x))
        (Fn.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum") / n).backward()
        got, want = dict(tr.model.named_parameters()), dict(plain.named_parameters())
        assert got.keys() == want.keys()
        for k in got:
            assert torch.allclose(got[k].grad, want[k].grad, rtol=1e-4, atol=1e-6), (step, k)
        tr.step("test step")
        plain.load_state_dict(tr.model.state_dict())


def test_transformer_learns_and_resumes_exactly():
    full = _trainer(4)
    full.run()
    losses = [r["train_loss"] for r in full.state.history]
    assert losses[-1] < losses[0] - 0.1  # it learns the training tokens
    assert full.state.best >= 1 and full.state.kept is not None
    half = _trainer(4)
    half.run(until=2)
    saved = half.state_dict()
    resumed = _trainer(4)
    resumed.load_state_dict(saved)
    resumed.run()
    for a, b in zip(full.state.history, resumed.state.history):
        assert {k: v for k, v in a.items() if k != "time_s"} == {k: v for k, v in b.items() if k != "time_s"}
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_transformer_early_stopping_keeps_the_best_epoch():
    tr = _trainer(30, early_stop_patience=2)
    tr.run()
    st = tr.state
    assert st.stopped_early and st.done == st.best + 2 < 30
    vals = [r["val_loss"] for r in st.history]
    assert min(vals) == vals[st.best - 1] == st.best_loss
    assert math.isfinite(st.best_loss)


def test_sequences_cover_a_corpus_stream_with_overlapping_windows():
    ts = from_lists([[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    x, y = sequences(ts.tokens, ts.offsets, "corpus", 4)
    assert x.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert y.tolist() == [[2, 3, 4, 5], [6, 7, 8, 9]]
