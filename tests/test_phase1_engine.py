"""The batched Phase 1 engine equals the plain per-token reference."""
from __future__ import annotations

import math

import pytest
import torch
from grad_spy import spy_gradients
from reference import phase1_reference, token_order
from toy import from_lists

import newllm.cvfp.phase1 as p1mod
from newllm.config import ModelConfig, Phase1Config
from newllm.diversity import DIVERSITY
from newllm.cvfp.engine import Schedule, batch_ranges
from newllm.cvfp.model import build_model, count_parameters
from newllm.cvfp.phase1 import Phase1Trainer
from newllm.runtime import Runtime
import newllm.train.core as train_core

TINY = ModelConfig(context_dim=8, embed_dim=6, num_layers=2, vocab_size=50)


def toy_tokens(seed=0, lengths=(7, 3, 9, 1, 5)):
    g = torch.Generator().manual_seed(seed)
    return from_lists([torch.randint(0, 50, (n,), generator=g).tolist() for n in lengths])


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
    ts = toy_tokens()
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


def test_schedule_is_position_major_over_length_sorted_streams():
    ts = toy_tokens()
    for mode in ("sample", "corpus"):
        sched = Schedule.build(ts.offsets, mode)
        assert sched.order.tolist() == [i for i, _, _ in token_order(ts.offsets.tolist(), mode)]
        seen = []
        for p0, p1 in batch_ranges(sched.num_tokens, 4):
            for t, a, b, j0 in sched.steps(p0, p1):
                seen.extend(range(a, b))
                assert (sched.time_of[a:b] == t).all()
                assert sched.stream_of[a:b].tolist() == list(range(j0, j0 + b - a))
        assert seen == list(range(sched.num_tokens))


def test_default_size_parameter_count():
    model = build_model(ModelConfig(num_layers=6), seed=0)  # the original guide's size
    assert count_parameters(model) == 91_429_969


def test_short_run_trains_and_changes_theta():
    ts = toy_tokens(lengths=(20, 20, 20))
    cfg = Phase1Config(max_iterations=3, batch_tokens=16)
    model = build_model(TINY, seed=1)
    theta0 = model.layer_state()
    tr = Phase1Trainer(model, ts.tokens, ts.offsets, cfg, Runtime(torch.device("cpu"), "fp32"), seed=0)
    tr.run()
    assert tr.state.steps == 2 * 4
    from newllm.cvfp.phase1 import relative_change
    assert relative_change(theta0, model.layer_state()) > 1e-3


def test_bf16_autocast_runs_close_to_fp32():
    ts = toy_tokens(lengths=(30, 30))
    cfg = Phase1Config(max_iterations=2, batch_tokens=0)
    out = {}
    for prec in ("fp32", "bf16"):
        model = build_model(ModelConfig(context_dim=32, embed_dim=32, num_layers=2, vocab_size=50), seed=1)
        tr = Phase1Trainer(model, ts.tokens, ts.offsets, cfg, Runtime(torch.device("cpu"), prec), seed=0)
        tr.run()
        out[prec] = tr.ctx.prev_ctx
    rel = (out["fp32"] - out["bf16"]).norm() / out["fp32"].norm()
    assert 0 < rel < 0.05


def test_pass_noise_by_schedule_position_in_blocks(monkeypatch):
    """Noise rows depend only on (seed, pass, global schedule position): any split of a
    range gives the same rows, across block boundaries; passes and seeds differ; sigma scales."""
    import newllm.cvfp.noise as p1
    monkeypatch.setattr(p1, "NOISE_BLOCK", 5)
    nz = p1.pass_noise(seed=2, k=1, d=3, std=0.5)
    full = nz.rows(0, 23)
    assert full.shape == (23, 3)
    assert torch.equal(torch.cat([nz.rows(a, b) for a, b in [(0, 4), (4, 11), (11, 12), (12, 23)]]), full)
    assert torch.equal(p1.pass_noise(2, 1, 3, 0.5).rows(7, 19), full[7:19])  # a fresh object, a mid range
    assert nz.rows(9, 9).shape == (0, 3)
    assert not torch.equal(p1.pass_noise(2, 2, 3, 0.5).rows(0, 23), full)
    assert not torch.equal(p1.pass_noise(3, 1, 3, 0.5).rows(0, 23), full)
    assert not torch.equal(full[:5], full[5:10])  # blocks are distinct draws
    assert torch.allclose(p1.pass_noise(2, 1, 3, 1.0).rows(0, 23) * 0.5, full)
    assert p1.pass_noise(2, 1, 3, 0.0) is None
    big = p1.pass_noise(0, 1, 64, 0.01).rows(0, 20)
    assert 0.008 < float(big.std()) < 0.012


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


@pytest.mark.parametrize("mode", ["sample", "corpus"])
def test_convergence_diffs_match_a_per_token_loop(mode):
    """validate_rank's final_diff: frozen passes carrying each stream's last context, diff_j =
    mean |c^j - c^(j-1)|, checked against a plain loop over streams and tokens."""
    from newllm.cvfp.passes import convergence_diffs, embed_all
    ts = toy_tokens()
    model = build_model(TINY, seed=4)
    rt = Runtime(torch.device("cpu"), "fp32")
    x = embed_all(model, ts.tokens, rt.device)
    start = torch.randn(ts.num_tokens, TINY.context_dim, generator=torch.Generator().manual_seed(1))
    diffs = convergence_diffs(model, Schedule.build(ts.offsets, mode), x, start.clone(), 3)
    off = ts.offsets.tolist()
    streams = [(0, off[-1])] if mode == "corpus" else [(off[i], off[i + 1]) for i in range(len(off) - 1)]
    prev, expected = start.clone(), []
    with torch.no_grad():
        for _ in range(3):
            cur = torch.empty_like(prev)
            for a, e in streams:
                c = prev[e - 1:e]
                for i in range(a, e):
                    c, _ = model.step(c, x[i:i + 1])
                    cur[i] = c[0]
            expected.append(float((cur - prev).norm(dim=1).mean()))
            prev = cur
    assert diffs == pytest.approx(expected, rel=1e-5)
    assert expected[0] > 0


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


def test_batch_objectives_refuse_the_online_batch():
    from newllm.config import from_dict
    from newllm.errors import ConfigError
    with pytest.raises(ConfigError, match="phase1.batch_tokens.*at least 2"):
        from_dict({"phase1": {"diversity": "vicreg", "batch_tokens": 1}}, sections=["phase1"])
    with pytest.raises(ConfigError, match="phase1.batch_tokens.*between 2 and"):
        from_dict({"phase1": {"diversity": "uniformity", "batch_tokens": 0}}, sections=["phase1"])
    from_dict({"phase1": {"diversity": "ema_distance", "batch_tokens": 1}}, sections=["phase1"])
    from_dict({"phase1": {"diversity": "vicreg", "batch_tokens": 1, "dist_reg_weight": 0.0}}, sections=["phase1"])


@pytest.mark.parametrize("diversity", tuple(DIVERSITY))
def test_every_objective_is_finite_on_a_one_token_batch(diversity):
    """A pass's last batch can hold a single token (e.g. 1,025 tokens in 1,024-token batches)."""
    from newllm.cvfp.objectives import value_and_grad
    c = torch.nn.functional.layer_norm(torch.randn(1, 8), (8,))
    value, grad = value_and_grad(diversity, c, c[0] * 0.5, Phase1Config())
    assert math.isfinite(value)
    assert grad is None or bool(torch.isfinite(grad).all())


def _plain_uniformity(c: torch.Tensor, t: float, anchors: int, group_size: int = 0) -> torch.Tensor:
    """The formula as written, left to autograd: log mean exp(-t ||z_i - z_j||^2) over the pairs
    i != j: j in the anchors (every ceil(b/K)-th row; every row for K = 0), or i and j in the
    same one of ceil(b/K) groups, row i in group i mod ceil(b/K)."""
    b = c.shape[0]
    z = torch.nn.functional.normalize(c, dim=1)
    js = list(range(b)) if anchors == 0 or b <= anchors else list(range(0, b, math.ceil(b / anchors)))
    groups = 1 if group_size == 0 or b <= group_size else math.ceil(b / group_size)
    pairs = [(i, j) for i in range(b) for j in js if i != j and i % groups == j % groups]
    d2 = torch.stack([(z[i] - z[j]).pow(2).sum() for i, j in pairs])
    return torch.logsumexp(-t * d2, 0) - math.log(len(pairs))


@pytest.mark.parametrize("b,t,anchors,group_size", [
    (2, 2.0, 0, 0), (9, 2.0, 0, 0), (64, 2.0, 0, 0), (40, 300.0, 0, 0),
    (9, 2.0, 4, 0), (64, 2.0, 16, 0), (10, 2.0, 2, 0), (40, 300.0, 7, 0),
    (9, 2.0, 0, 4), (64, 2.0, 0, 16), (10, 2.0, 0, 2), (3, 2.0, 0, 2), (40, 300.0, 0, 7), (7, 2.0, 0, 7)])
def test_uniformity_hand_written_gradient_equals_autograd(b, t, anchors, group_size):
    """uniformity's backward is written by hand (all pairs and groups: one matmul, the score
    matrix being symmetric); in float64 it is the plain formula's autograd gradient, for every
    pair, anchors and groups (uneven ones included), also where exp would underflow."""
    from newllm.cvfp.objectives import value_and_grad
    g = torch.Generator().manual_seed(b)
    c = (torch.randn(b, 12, generator=g, dtype=torch.float64) + 0.7).requires_grad_()
    want = _plain_uniformity(c, t, anchors, group_size)
    (want_grad,) = torch.autograd.grad(want, c)
    cfg = Phase1Config(uniformity_temperature=t, uniformity_anchors=anchors, uniformity_group_size=group_size)
    value, grad = value_and_grad("uniformity", c.detach(), c[0].detach(), cfg)
    assert value == pytest.approx(float(want.detach()), rel=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


def test_uniformity_pair_sets_are_one_choice():
    from newllm.config import from_dict
    from newllm.errors import ConfigError
    with pytest.raises(ConfigError, match="phase1.uniformity_group_size.*choose one"):
        from_dict({"phase1": {"uniformity_anchors": 8, "uniformity_group_size": 8}}, sections=["phase1"])
    with pytest.raises(ConfigError, match="phase1.uniformity_group_size.*at least 2"):
        from_dict({"phase1": {"uniformity_group_size": 1}}, sections=["phase1"])


def test_uniformity_matmuls_follow_a_bf16_run(monkeypatch):
    """A bf16 run computes uniformity's two b x b matmuls in bf16 (the objective's cost; the
    reductions stay fp32): the trainer passes its autocast dtype, the gradient really changes,
    and stays within bf16 rounding of the fp32 one."""
    from newllm.cvfp import objectives
    seen = []
    real = p1mod.value_and_grad
    monkeypatch.setattr(p1mod, "value_and_grad", lambda *a: seen.append(a[-1]) or real(*a))
    ts = toy_tokens(lengths=(12, 12))
    for prec in ("fp32", "bf16"):
        model = build_model(ModelConfig(context_dim=16, embed_dim=16, num_layers=1, vocab_size=50), seed=1)
        Phase1Trainer(model, ts.tokens, ts.offsets, Phase1Config(max_iterations=2, batch_tokens=8),
                      Runtime(torch.device("cpu"), prec), seed=0).run()
    assert set(seen) == {torch.float32, torch.bfloat16}

    g = torch.Generator().manual_seed(0)
    c = torch.nn.functional.layer_norm(torch.randn(256, 64, generator=g), (64,)) + 0.3
    v32, g32 = objectives.value_and_grad("uniformity", c, c[0], Phase1Config(), True, torch.float32)
    v16, g16 = objectives.value_and_grad("uniformity", c, c[0], Phase1Config(), True, torch.bfloat16)
    assert g16.dtype == torch.float32
    rel = float((g16 - g32).norm() / g32.norm())
    assert 0 < rel < 0.02
    assert v16 == pytest.approx(v32, abs=0.02)
    # every other objective ignores the dtype: its matmuls stay fp32
    _, gv = objectives.value_and_grad("vicreg", c, c[0], Phase1Config(), True, torch.bfloat16)
    torch.testing.assert_close(gv, objectives.value_and_grad("vicreg", c, c[0], Phase1Config())[1], rtol=0, atol=0)
