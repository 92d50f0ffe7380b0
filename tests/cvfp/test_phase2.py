"""The batched Phase 2 trainer (``newllm.cvfp.phase2``) equals the plain per-token reference
(``helpers.reference``); every option trains as it says and resumes bit-exactly."""
from __future__ import annotations

import io
import math

import pytest
import torch

import newllm.train.core as train_core
from helpers.grad_spy import spy_gradients
from helpers.reference import phase2_reference, token_order
from helpers.toy import TINY_MODEL, random_tokens
from newllm.config import ModelConfig, Phase2Config
from newllm.cvfp.model import build_model
from newllm.cvfp.phase2 import Phase2Trainer, prepare_head
from newllm.data.tokens import next_token_targets
from newllm.errors import NumericalError
from newllm.runtime import Runtime

TINY = TINY_MODEL
CPU = Runtime(torch.device("cpu"), "fp32")
LENGTHS = (7, 3, 9, 1, 5)   # 25 tokens; the 1-token sample has no target in sample mode

pytestmark = pytest.mark.usefixtures("one_thread")


def P2(**kw) -> Phase2Config:
    """Phase 2 settings for the exactness tests: no dropout (the per-token reference has none)
    and every epoch run (no early stop), unless a test asks for them."""
    return Phase2Config(**{"dropout": 0.0, "early_stop_patience": 0, **kw})


def make_trainer(model, cfg, mode="sample", rt=CPU, embeddings_frozen=False, train=None, val=None):
    train = train or random_tokens()
    val = val or random_tokens(seed=1, lengths=(6, 4, 8))
    return Phase2Trainer(model, train.tokens, train.offsets, val.tokens, val.offsets, cfg, mode, rt,
                         embeddings_frozen=embeddings_frozen)


def run_both(mode, cfg, dtype, head="token", embeddings_frozen=False):
    ts = random_tokens()
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        m1 = prepare_head(build_model(TINY, seed=3), head, seed=7)
        m2 = prepare_head(build_model(TINY, seed=3), head, seed=7)
        tr = make_trainer(m1, cfg, mode, embeddings_frozen=embeddings_frozen, train=ts)
        g_ref = []
        with spy_gradients(train_core) as g_fast:
            tr.run()
        ref = phase2_reference(m2, ts.tokens, ts.offsets, cfg, mode, embeddings_frozen, grad_sink=g_ref.append)
    finally:
        torch.set_default_dtype(old)
    return tr, m1, m2, ref, g_fast, g_ref


@pytest.mark.parametrize("mode,head,freeze", [("sample", "token", False), ("corpus", "token", False),
                                              ("sample", "context", False), ("corpus", "token", True)])
def test_full_batch_fp32_matches_reference(mode, head, freeze):
    cfg = P2(epochs=1, batch_tokens=0, chunk_tokens=4, freeze_context=freeze)
    tr, m1, m2, ref, g_fast, g_ref = run_both(mode, cfg, torch.float32, head)
    assert tr.state.steps == ref["steps"] == len(g_fast) == len(g_ref) == 1
    assert abs(tr.state.history[0]["train_loss"] - ref["train_loss"][0]) < 1e-5
    assert len(g_fast[0]) == len(g_ref[0]) == len(tr.params)
    for a, b in zip(g_fast[0], g_ref[0]):
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-9, ((a - b).norm(), b.norm())
    assert all(float(g.norm()) > 0 for g in g_fast[0][-2:])  # the head always gets a gradient
    if freeze:
        assert len(tr.params) == 2
    else:
        assert any(float(g.norm()) > 0 for g in g_fast[0][:-2])


@pytest.mark.parametrize("mode", ["sample", "corpus"])
@pytest.mark.parametrize("batch_tokens,schedule", [(1, "constant"), (4, "constant"), (7, "constant"), (4, "cosine")])
def test_minibatch_steps_match_reference_float64(mode, batch_tokens, schedule):
    cfg = P2(epochs=2, batch_tokens=batch_tokens, chunk_tokens=3, learning_rate=0.01, lr_schedule=schedule,
             warmup_fraction=0.2, weight_decay=0.1 if schedule == "cosine" else 0.0)
    tr, m1, m2, ref, g_fast, g_ref = run_both(mode, cfg, torch.float64)
    # batches without a target take no step (e.g. a last batch holding only streams' last tokens)
    ts = random_tokens()
    has = [int(next_token_targets(ts.tokens, ts.offsets, mode)[i]) >= 0
           for i, _, _ in token_order(ts.offsets.tolist(), mode)]
    with_target = sum(any(has[p:p + batch_tokens]) for p in range(0, 25, batch_tokens))
    assert (with_target < -(-25 // batch_tokens)) == (batch_tokens in (1, 4))
    assert tr.state.steps == ref["steps"] == len(g_fast) == len(g_ref) == 2 * with_target
    for ga, gb in zip(g_fast, g_ref):
        for a, b in zip(ga, gb):
            assert torch.allclose(a, b, atol=1e-10, rtol=1e-7)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-9)
    for h, r in zip(tr.state.history, ref["train_loss"]):
        assert abs(h["train_loss"] - r) < 1e-9


def test_frozen_pretrained_embeddings_match_reference_float64():
    cfg = P2(epochs=2, batch_tokens=5, chunk_tokens=2, learning_rate=0.01)
    torch.set_default_dtype(torch.float64)
    try:
        e0 = build_model(TINY, seed=3).embed.weight.detach().clone()
    finally:
        torch.set_default_dtype(torch.float32)
    tr, m1, m2, ref, g_fast, g_ref = run_both("sample", cfg, torch.float64, embeddings_frozen=True)
    assert torch.equal(m1.embed.weight, e0)
    assert all(p is not m1.embed.weight for p in tr.params)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-9)


def test_freeze_context_trains_only_the_head():
    model = build_model(TINY, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tr = make_trainer(model, P2(epochs=4, batch_tokens=8, chunk_tokens=5, freeze_context=True,
                                          learning_rate=0.02))
    tr.run()
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("head."):
            assert not torch.equal(v, after[k]), k
        else:
            assert torch.equal(v, after[k]), k
    losses = [h["train_loss"] for h in tr.state.history]
    assert losses[-1] < losses[0] - 0.05, losses


def test_chunked_loss_equals_unchunked():
    out = {}
    for chunk in (1, 3, 10_000):
        model = build_model(TINY, seed=2)
        tr = make_trainer(model, P2(epochs=1, batch_tokens=0, chunk_tokens=chunk))
        with spy_gradients(train_core) as grads:
            tr.run()
        out[chunk] = (tr.state.history[0], grads[0], tr.evaluate(pairs=True))
    h0, g0, v0 = out[10_000]
    for chunk in (1, 3):
        h, g, v = out[chunk]
        assert abs(h["train_loss"] - h0["train_loss"]) < 1e-6
        assert abs(v.loss - v0.loss) < 1e-6 and v.acc == v0.acc
        assert torch.allclose(v.pair_ce, v0.pair_ce, atol=1e-6)
        for a, b in zip(g, g0):
            assert torch.allclose(a, b, atol=1e-7, rtol=1e-5)


def test_nan_in_head_stops_with_numerical_error():
    model = build_model(TINY, seed=0)
    with torch.no_grad():
        model.head.weight[3, 1] = float("nan")
    tr = make_trainer(model, P2(epochs=2, batch_tokens=8))
    with pytest.raises(NumericalError, match=r"epoch 1: non-finite train loss"):
        tr.run()


OPTIONS = [{"freeze_context": False}, {"freeze_context": True}, {"dropout": 0.3}, {"context_noise_std": 0.2},
           {"weight_decay": 0.0}, {"freeze_embeddings": True}, {"tie": True},
           {"lr_schedule": "cosine", "warmup_fraction": 0.3}]


def _model(seed: int, tie: bool):
    model = build_model(TINY if not tie else ModelConfig(context_dim=8, embed_dim=8, num_layers=2, vocab_size=50),
                        seed=seed)
    if tie:
        model.tie_head()
    return model


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_resume_is_bitwise(opt):
    """Every Phase 2 option resumes bit-exactly (dropout masks depend only on seed and epoch)."""
    opt = dict(opt)
    tie = opt.pop("tie", False)
    cfg = P2(epochs=2, batch_tokens=6, chunk_tokens=4, learning_rate=0.01, **opt)
    straight = _model(4, tie)
    tr = make_trainer(straight, cfg)
    tr.run()

    first = _model(4, tie)
    tr1 = make_trainer(first, cfg)
    tr1.run(until=1)
    buf = io.BytesIO()
    torch.save(tr1.state_dict(), buf)
    buf.seek(0)
    fresh = _model(99, tie)  # other weights: everything must come from the state
    tr2 = make_trainer(fresh, cfg)
    tr2.load_state_dict(torch.load(buf, weights_only=True))
    tr2.run()
    assert tr2.state.done == 2 and tr2.state.steps == tr.state.steps
    for (k, a), b in zip(straight.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    for h, r in zip(tr.state.history, tr2.state.history):
        assert h["train_loss"] == r["train_loss"] and h["val_loss"] == r["val_loss"]


@pytest.mark.parametrize("opt", [{"context_noise_std": 0.2}, {"weight_decay": 0.0}, {"freeze_embeddings": True},
                                 {"lr_schedule": "constant"}])
def test_options_match_reference_float64(opt):
    """Context noise, Adam without decay, frozen embeddings and a constant rate: the trainer equals
    the per-token reference (the defaults, AdamW with a cosine schedule, in every other test)."""
    cfg = P2(epochs=2, batch_tokens=7, chunk_tokens=3, learning_rate=0.01, **opt)
    tr, m1, m2, ref, g_fast, g_ref = run_both("sample", cfg, torch.float64)
    assert tr.state.steps == ref["steps"] > 0
    assert tr.state.history[-1]["train_loss"] == pytest.approx(ref["train_loss"][-1], rel=1e-10)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-9)


@pytest.mark.parametrize("opt", OPTIONS[2:], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_each_option_changes_training_as_it_says(opt):
    opt = dict(opt)
    tie = opt.pop("tie", False)
    base, model = _model(4, False), _model(4, tie)
    embed0 = model.embed.weight.detach().clone()
    make_trainer(base, P2(epochs=2, batch_tokens=6, learning_rate=0.01)).run()
    tr = make_trainer(model, P2(epochs=2, batch_tokens=6, learning_rate=0.01, **opt))
    tr.run()
    changed = [k for (k, a), b in zip(base.state_dict().items(), model.state_dict().values()) if not torch.equal(a, b)]
    assert changed, opt  # the option is really in the training
    if opt.get("freeze_embeddings"):
        assert torch.equal(model.embed.weight, embed0)
    else:
        assert not torch.equal(model.embed.weight, embed0)
    if tie:
        assert model.head.weight is model.embed.weight and sum(p is model.embed.weight for p in tr.params) == 1


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs(precision):
    model = build_model(ModelConfig(context_dim=16, embed_dim=16, num_layers=2, vocab_size=50), seed=0)
    tr = make_trainer(model, P2(epochs=2, batch_tokens=10), rt=Runtime(torch.device("cpu"), precision))
    assert (tr.scaler is not None) == (precision == "fp16")
    tr.run()
    assert all(math.isfinite(h["val_loss"]) for h in tr.state.history)
