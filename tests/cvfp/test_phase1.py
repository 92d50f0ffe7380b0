"""The batched Phase 1 trainer (``newllm.cvfp.phase1``) equals the plain per-token reference
(``helpers.reference``) for every stream mode, batch size and objective, on both forward paths."""
from __future__ import annotations

import pytest
import torch

import newllm.train.core as train_core
from helpers.grad_spy import spy_gradients
from helpers.reference import phase1_reference
from helpers.toy import TINY_MODEL, random_tokens
from newllm.config import ModelConfig, Phase1Config
from newllm.diversity import DIVERSITY
from newllm.cvfp.model import build_model
from newllm.cvfp.phase1 import Phase1Trainer
from newllm.runtime import Runtime

TINY = TINY_MODEL


@pytest.fixture(params=["two-pass", "fused"])
def fuse(request, monkeypatch):
    """Both ways of getting a batch's forward: a no-grad scan then a batched forward over the
    batch, or the scan itself keeping its graph (``Phase1Trainer._fusable``)."""
    import newllm.cvfp.phase1 as p1
    fused = request.param == "fused"
    monkeypatch.setattr(p1, "FUSE_MIN_ROWS", 0 if fused else 10 ** 9)
    calls = []
    orig = p1.Phase1Trainer._fusable
    monkeypatch.setattr(p1.Phase1Trainer, "_fusable", lambda self, a, b: calls.append(orig(self, a, b)) or calls[-1])
    yield fused
    assert any(calls) == fused, calls  # the path under test really ran


def run_both(mode, batch_tokens, iters, dtype, lr=0.002, chunk_tokens=4, **phase1):
    ts = random_tokens()
    phase1.setdefault("diversity", "ema_distance")  # the engine's exactness; every objective has its own test
    cfg = Phase1Config(stream=mode, batch_tokens=batch_tokens, max_iterations=iters, chunk_tokens=chunk_tokens,
                       min_converged_ratio=1.0, context_noise_std=0.05, learning_rate=lr, **phase1)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        rt = Runtime(torch.device("cpu"), "fp32")
        m1 = build_model(TINY, seed=3)
        m2 = build_model(TINY, seed=3)
        tr = Phase1Trainer(m1, ts.tokens, ts.offsets, cfg, rt, seed=5)
        g_ref = []
        ctx_fast = []
        with spy_gradients(train_core) as g_fast:
            tr.run(on_end=lambda t, r, i: ctx_fast.append(t.ctx.prev_ctx.clone()))
        ref = phase1_reference(m2, ts.tokens, ts.offsets, cfg, seed=5, grad_sink=g_ref.append)
    finally:
        torch.set_default_dtype(old)
    return tr, m1, m2, ctx_fast, ref, g_fast, g_ref


@pytest.mark.parametrize("mode", ["sample", "corpus"])
def test_full_batch_fp32_matches_reference(mode, fuse):
    tr, m1, m2, ctx_fast, ref, g_fast, g_ref = run_both(mode, 0, 2, torch.float32, chunk_tokens=64 if fuse else 4)
    assert len(ctx_fast) == len(ref["contexts"]) == 2
    for a, b in zip(ctx_fast, ref["contexts"]):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    assert len(g_fast) == len(g_ref) == 1 == tr.state.steps
    for a, b in zip(g_fast[0], g_ref[0]):
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-12, ((a - b).norm(), b.norm())
    assert any(float(g.norm()) > 0 for g in g_fast[0])


@pytest.mark.parametrize("mode", ["sample", "corpus"])
@pytest.mark.parametrize("batch_tokens", [1, 4, 7])
def test_minibatch_steps_match_reference_float64(mode, batch_tokens, fuse):
    tr, m1, m2, ctx_fast, ref, g_fast, g_ref = run_both(mode, batch_tokens, 3, torch.float64,
                                                       chunk_tokens=64 if fuse else 4)
    assert tr.state.steps == ref["steps"] == len(g_ref) == len(g_fast) == 2 * -(-25 // batch_tokens)
    for a, b in zip(ctx_fast, ref["contexts"]):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)
    for ga, gb in zip(g_fast, g_ref):
        for a, b in zip(ga, gb):
            assert torch.allclose(a, b, atol=1e-9, rtol=1e-7)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-9)
    assert torch.allclose(tr.ctx.mu, ref["mu"], atol=1e-9)


def test_short_run_trains_and_changes_theta():
    ts = random_tokens(lengths=(20, 20, 20))
    cfg = Phase1Config(max_iterations=3, batch_tokens=16)
    model = build_model(TINY, seed=1)
    theta0 = model.layer_state()
    tr = Phase1Trainer(model, ts.tokens, ts.offsets, cfg, Runtime(torch.device("cpu"), "fp32"), seed=0)
    tr.run()
    assert tr.state.steps == 2 * 4
    from newllm.cvfp.phase1 import relative_change
    assert relative_change(theta0, model.layer_state()) > 1e-3


def test_bf16_autocast_runs_close_to_fp32():
    ts = random_tokens(lengths=(30, 30))
    cfg = Phase1Config(max_iterations=2, batch_tokens=0)
    out = {}
    for prec in ("fp32", "bf16"):
        model = build_model(ModelConfig(context_dim=32, embed_dim=32, num_layers=2, vocab_size=50), seed=1)
        tr = Phase1Trainer(model, ts.tokens, ts.offsets, cfg, Runtime(torch.device("cpu"), prec), seed=0)
        tr.run()
        out[prec] = tr.ctx.prev_ctx
    rel = (out["fp32"] - out["bf16"]).norm() / out["fp32"].norm()
    assert 0 < rel < 0.05


@pytest.mark.parametrize("batch_tokens", [4, 7])
def test_noise_blocks_smaller_than_batches_match_reference(batch_tokens, monkeypatch):
    """Batches spanning several noise blocks (block of 3 positions) still equal the reference."""
    import newllm.cvfp.noise as p1
    monkeypatch.setattr(p1, "NOISE_BLOCK", 3)
    tr, m1, m2, ctx_fast, ref, g_fast, g_ref = run_both("sample", batch_tokens, 3, torch.float64)
    for a, b in zip(ctx_fast, ref["contexts"]):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-9)


@pytest.mark.parametrize("diversity", tuple(DIVERSITY))
@pytest.mark.parametrize("batch_tokens", [7, 0])
def test_every_objective_matches_reference_float64(diversity, batch_tokens, fuse):
    """Each objective through the trainer (its gradient taken once on the whole batch and pushed
    through 4-token chunks, or through the fused scan) equals the per-token reference, which
    backpropagates the same objective of the stacked batch directly."""
    tr, m1, m2, ctx_fast, ref, g_fast, g_ref = run_both(
        "sample", batch_tokens, 3, torch.float64, lr=0.01, chunk_tokens=64 if fuse else 4, diversity=diversity,
        dist_reg_weight=0.7)
    # the spectral objectives differentiate an eigendecomposition: rounding-level differences
    # between the scan's and the forward's contexts come back amplified by close eigenvalues
    tol = 1e-7 if diversity in ("spectral_entropy", "nuclear") else 1e-9
    assert tr.state.steps == ref["steps"] == len(g_fast) > 0
    for ga, gb in zip(g_fast, g_ref):
        for a, b in zip(ga, gb):
            assert torch.allclose(a, b, atol=tol, rtol=100 * tol), (a - b).abs().max()
    for a, b in zip(ctx_fast, ref["contexts"]):
        assert torch.allclose(a, b, atol=tol, rtol=0)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=tol)
    assert any(float(g.norm()) > 0 for g in g_fast[0])
    # the logged diversity value is the batch-weighted mean of D over the pass
    last = tr.state.history[-1]
    assert last["div_loss"] == last["div_loss"]  # a number, not NaN


@pytest.mark.parametrize("pair_set", [{"uniformity_anchors": 3, "uniformity_group_size": 0},
                                      {"uniformity_group_size": 3}])
def test_uniformity_pair_sets_match_reference_float64(fuse, pair_set):
    """With anchors or groups the pairs are picked by the rows' places in schedule order: the
    trainer's batch rows are in the reference's order, so the two agree."""
    tr, m1, m2, ctx_fast, ref, g_fast, g_ref = run_both(
        "sample", 7, 3, torch.float64, lr=0.01, chunk_tokens=64 if fuse else 4, diversity="uniformity",
        dist_reg_weight=0.7, **pair_set)
    for ga, gb in zip(g_fast, g_ref):
        for a, b in zip(ga, gb):
            assert torch.allclose(a, b, atol=1e-9, rtol=1e-7), (a - b).abs().max()
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-9)
    # and the pair set changed the run: all pairs train differently
    _, m3, *_ = run_both("sample", 7, 3, torch.float64, lr=0.01, chunk_tokens=4, diversity="uniformity",
                         dist_reg_weight=0.7, uniformity_group_size=0)
    assert max(float((p - q).detach().abs().max()) for p, q in zip(m1.parameters(), m3.parameters())) > 1e-6


def test_objectives_move_the_contexts_differently():
    """The objective is really in the loss: the same run under each objective ends with
    different weights (w = 0.7), and `none` equals w = 0 up to the (1 - w) scale of the loss."""
    finals = {}
    for diversity in tuple(DIVERSITY):
        tr, m1, *_ = run_both("sample", 7, 2, torch.float64, lr=0.01, diversity=diversity, dist_reg_weight=0.7)
        finals[diversity] = torch.cat([p.detach().flatten() for p in m1.parameters()])
    names = list(finals)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(finals[a], finals[b], atol=1e-7), (a, b)


@pytest.mark.gpu
def test_relative_change_with_theta0_and_theta_on_different_devices():
    from newllm.cvfp.model import build_model
    from newllm.cvfp.phase1 import relative_change
    model = build_model(ModelConfig(context_dim=8, embed_dim=8, num_layers=1, vocab_size=30), seed=0).cuda()
    theta0 = {k: v.detach().clone() for k, v in model.layers.state_dict().items()}  # on the GPU
    with torch.no_grad():
        model.layers[0].fc.weight.add_(0.1)
    cpu = {k: v.cpu() for k, v in model.layers.state_dict().items()}
    assert relative_change(theta0, cpu) == pytest.approx(relative_change({k: v.cpu() for k, v in theta0.items()},
                                                                          model.layers.state_dict()))
    assert relative_change(theta0, cpu) > 0


@pytest.mark.parametrize("diversity", ["ema_distance", "uniformity", "vicreg"])
@pytest.mark.gpu
def test_phase1_on_cuda_matches_the_cpu(diversity):
    """The same run (fp32) on the GPU and on the CPU: contexts and weights agree to rounding."""
    from newllm.cvfp.model import build_model
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.runtime import Runtime
    ts = random_tokens(0, (30, 20, 25, 12), vocab=50)
    cfg = Phase1Config(max_iterations=3, batch_tokens=16, diversity=diversity, min_converged_ratio=1.0)
    out = {}
    for dev in ("cpu", "cuda"):
        model = build_model(ModelConfig(context_dim=16, embed_dim=16, num_layers=2, vocab_size=50), seed=0)
        tr = Phase1Trainer(model.to(dev), ts.tokens, ts.offsets, cfg, Runtime(torch.device(dev), "fp32"), seed=1)
        tr.run()
        out[dev] = (tr.ctx.prev_ctx.cpu(), {k: v.cpu() for k, v in model.layers.state_dict().items()})
    assert torch.allclose(out["cpu"][0], out["cuda"][0], atol=1e-3, rtol=1e-3)
    for k, v in out["cpu"][1].items():
        assert torch.allclose(v, out["cuda"][1][k], atol=1e-3, rtol=1e-3), k
