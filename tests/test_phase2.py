"""Phase 2: the batched trainer equals the per-token reference; baselines, generation, resume."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import torch
from grad_spy import spy_gradients
from reference import phase2_reference, token_order
from toy import from_lists, phase2_inputs

import newllm.cvfp.phase2 as phase2_module
from newllm.config import ModelConfig, Phase2Config, from_dict
from newllm.cvfp.model import build_model
from newllm.cvfp.phase2 import Phase2Trainer, prepare_head
from newllm.data.tokens import next_token_targets, save_token_set
from newllm.errors import CheckpointError, NumericalError
from newllm.runtime import Runtime
import newllm.train.core as train_core

TINY = ModelConfig(context_dim=8, embed_dim=6, num_layers=2, vocab_size=50)
CPU = Runtime(torch.device("cpu"), "fp32")
LENGTHS = (7, 3, 9, 1, 5)   # 25 tokens; the 1-token sample has no target in sample mode


pytestmark = pytest.mark.usefixtures("one_thread")


def P2(**kw) -> Phase2Config:
    """Phase 2 settings for the exactness tests: no dropout (the per-token reference has none)
    and every epoch run (no early stop), unless a test asks for them."""
    return Phase2Config(**{"dropout": 0.0, "early_stop_patience": 0, **kw})


def toy_tokens(seed=0, lengths=LENGTHS, vocab=50):
    g = torch.Generator().manual_seed(seed)
    return from_lists([torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths])


def make_trainer(model, cfg, mode="sample", rt=CPU, embeddings_frozen=False, train=None, val=None):
    train = train or toy_tokens()
    val = val or toy_tokens(seed=1, lengths=(6, 4, 8))
    return Phase2Trainer(model, train.tokens, train.offsets, val.tokens, val.offsets, cfg, mode, rt,
                         embeddings_frozen=embeddings_frozen)


def run_both(mode, cfg, dtype, head="token", embeddings_frozen=False):
    ts = toy_tokens()
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


@pytest.mark.parametrize("dtype,cd,tol", [(torch.float64, None, 1e-12), (torch.float32, torch.bfloat16, 2e-2)])
def test_fused_linear_cross_entropy_equals_f_cross_entropy(dtype, cd, tol):
    from torch.nn import functional as Fn

    from newllm.lm_loss import LinearCrossEntropy
    g = torch.Generator().manual_seed(0)
    h0, w0, b0 = (torch.randn(*s, generator=g, dtype=dtype) for s in ((7, 5), (11, 5), (11,)))
    y = torch.randint(0, 11, (7,), generator=g)
    grads = []
    for fused in (True, False):
        h, w, b = (t.clone().requires_grad_() for t in (h0, w0, b0))
        loss = LinearCrossEntropy.apply(h, w, b, y, cd) if fused else \
            Fn.cross_entropy(Fn.linear(h, w, b), y, reduction="sum")
        (loss * 0.3).backward()
        grads.append((loss.detach(), h.grad, w.grad, b.grad))
    for a, b in zip(*grads):
        assert a.dtype == b.dtype and torch.allclose(a, b, atol=tol, rtol=tol), (a, b)


@pytest.mark.parametrize("block_bytes", [1, 4 * 11 * 3, 1 << 30])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_ce_rows_in_blocks_equals_cross_entropy_and_argmax(monkeypatch, block_bytes, dtype):
    """Loss, top-1 hits and the in-place gradient do not depend on the row-block size;
    ties count as hits only at the first maximal index (argmax's rule)."""
    from torch.nn import functional as Fn

    import newllm.lm_loss as p2
    monkeypatch.setattr(p2, "CE_BLOCK_BYTES", block_bytes)
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(10, 11, generator=g, dtype=torch.float64).to(dtype)
    z0[0, 2] = z0[0, 7] = z0[0].max() + 1  # a tie: argmax is 2
    y = torch.randint(0, 11, (10,), generator=g)
    y[0], y[1] = 7, int(z0[1].argmax())
    ref = z0.double()
    z = z0.clone()
    loss, hits = p2.ce_rows(z, y, grad=True)
    want = Fn.cross_entropy(ref, y, reduction="sum")
    grad = torch.softmax(ref, 1) - Fn.one_hot(y, 11).double()
    tol = 1e-12 if dtype == torch.float64 else 1e-2
    assert abs(float(loss) - float(want)) < tol * 10
    assert int(hits) == int((ref.argmax(1) == y).sum()) and int(hits) >= 1  # row 1 is a hit, row 0 not
    assert torch.allclose(z.double(), grad, atol=tol)


def test_targets_stay_within_streams():
    ts = from_lists([[5, 6, 7], [8], [9, 10]])
    assert next_token_targets(ts.tokens, ts.offsets, "sample").tolist() == [6, 7, -1, -1, 10, -1]
    assert next_token_targets(ts.tokens, ts.offsets, "corpus").tolist() == [6, 7, 8, 9, 10, -1]


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
    ts = toy_tokens()
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
           {"weight_decay": 0.1}, {"freeze_embeddings": True}, {"tie": True},
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


@pytest.mark.parametrize("opt", [{"context_noise_std": 0.2}, {"weight_decay": 0.1}, {"freeze_embeddings": True}])
def test_options_match_reference_float64(opt):
    """Context noise, AdamW and frozen embeddings: the trainer equals the per-token reference."""
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


# ---------------------------------------------------------------------------- generation


def gpt2_tokenizer():
    from newllm.data.tokenizer import build_tokenizer
    return build_tokenizer("gpt2-offline")


def save_latest(model, path, predict_from="token"):
    import dataclasses
    torch.save({"model_state_dict": model.state_dict(),
                "config": {"seed": 0, "model": dataclasses.asdict(model.cfg), "phase1": {"stream": "sample"},
                           "phase2": dataclasses.asdict(Phase2Config(predict_from=predict_from))},
                "epoch": 1, "phase2_history": {"train_loss": [1.0], "val_loss": [1.0]}}, path)


def test_generate_is_deterministic(tmp_path, capsys):
    from newllm.cvfp.checkpoint import load_phase2 as load_for_generation
    from newllm.generate import generate, main
    mcfg = ModelConfig(context_dim=8, embed_dim=8, num_layers=1, vocab_size=50257)
    ckpt = tmp_path / "model_latest.pt"
    save_latest(prepare_head(build_model(mcfg, seed=0), "context", seed=0), ckpt, "context")
    model = load_for_generation(ckpt)
    assert model.head_from == "context"
    tok = gpt2_tokenizer()
    assert tok.encode("Hello world", add_special_tokens=False).ids == [15496, 995]
    a = generate(model, tok, "Hello world", 8, temperature=0.8, top_k=40, seed=1)
    b = generate(model, tok, "Hello world", 8, temperature=0.8, top_k=40, seed=1)
    c = generate(model, tok, "Hello world", 8, temperature=0.8, top_k=40, seed=2)
    assert a == b and a != c and isinstance(a, str)
    assert generate(model, tok, "Hello world", 6, seed=0) == generate(model, tok, "Hello world", 6, seed=5)
    # CLI
    tok.save(str(tmp_path / "tokenizer.json"))
    main(["--checkpoint", str(ckpt), "--tokenizer", str(tmp_path), "--prompt", "Hello world",
          "--max-new-tokens", "8", "--temperature", "0.8", "--top-k", "40", "--seed", "1"])
    # the prompt and the continuation, told apart (repr keeps spaces and line breaks visible)
    assert capsys.readouterr().out == f"prompt:       {'Hello world'!r}\ncontinuation: {a!r}\n"
    main(["--checkpoint", str(ckpt), "--tokenizer", str(tmp_path), "--prompt", "Hello world",
          "--max-new-tokens", "8", "--temperature", "0.8", "--top-k", "40", "--seed", "1", "--continuation-only"])
    assert capsys.readouterr().out == a + "\n"


def test_generation_checkpoint_errors(tmp_path, capsys, monkeypatch):
    from newllm.cvfp.checkpoint import load_phase2 as load_for_generation
    from newllm.generate import main
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="model_state_dict"):
        load_for_generation(bad)
    wrong = tmp_path / "wrong.pt"
    save_latest(build_model(TINY, seed=0), wrong)
    obj = torch.load(wrong, weights_only=True)
    obj["config"]["model"]["context_dim"] = 9
    torch.save(obj, wrong)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_for_generation(wrong)
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(tmp_path / "missing.pt"), "--prompt", "hi"])
    assert e.value.code == 2 and "missing" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # outside a repository: the default paths are relative to it
    with pytest.raises(SystemExit) as e:
        main(["--prompt", "hi"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "is not under the current directory" in err and "run this from the repository" in err


# ---------------------------------------------------------------------------- the stage


PARAMS = {"model": {"context_dim": 8, "embed_dim": 8, "num_layers": 2, "vocab_size": 64},
          "phase1": {"max_iterations": 2, "batch_tokens": 16},
          "phase2": {"epochs": 3, "batch_tokens": 20, "chunk_tokens": 7, "learning_rate": 0.01},
          "runtime": {"device": "cpu"}}


def stage_inputs(tmp_path, monkeypatch, passed=True):
    from newllm import paths
    from newllm.stages import phase1_fixed_point as phase1
    monkeypatch.chdir(tmp_path)
    save_token_set(toy_tokens(0, (12, 9, 16, 5, 12), vocab=64), paths.TOKENS_TRAIN)
    save_token_set(toy_tokens(1, (10, 7, 11), vocab=64), paths.TOKENS_VAL)
    save_token_set(toy_tokens(2, (9, 6, 12, 1), vocab=64), paths.TOKENS_TEST)
    phase1.run(from_dict(PARAMS, phase1.SECTIONS))
    phase2_inputs(passed)


def test_stage_writes_outputs_and_resumes_identically(tmp_path, monkeypatch, caplog):
    from newllm import paths
    from newllm.cvfp.phase2 import Phase2Trainer as T
    from newllm.cvfp.checkpoint import load_phase2 as load_for_generation
    from newllm.stages import phase2_lm as phase2
    stage_inputs(tmp_path, monkeypatch, passed=False)
    cfg = from_dict(PARAMS, phase2.SECTIONS)
    m = phase2.run(cfg)
    assert "FAILED validate_rank" in caplog.text
    for key in ("epochs", "optimizer_steps", "best_epoch", "time_s", "tokens_per_s", "peak_rss_mb",
                "embeddings", "precision", "device", "test_tokens"):
        assert key in m, key
    assert set(m["val"]) >= {"loss", "ppl", "acc"} and set(m["train"]) >= {"loss", "ppl"}
    assert set(m["test"]) == {"loss", "ppl", "acc"} and not any(k.startswith("beats_") for k in m)
    assert json.loads(paths.PHASE2_METRICS.read_text()) == m
    rows = list(csv.DictReader(paths.PHASE2_HISTORY.open()))
    assert list(rows[0]) == phase2.CSV_COLUMNS and [r["epoch"] for r in rows] == ["1", "2", "3"]
    # the headline figures are the kept (best) epoch's, the last epoch's stand beside them
    kept = rows[m["best_epoch"] - 1]
    assert m["val"]["loss"] == pytest.approx(float(kept["val_loss"]), abs=1e-6)
    assert m["val"]["acc"] == pytest.approx(float(kept["val_acc"]), abs=1e-6)
    assert m["last"]["epoch"] == 3 and m["last"]["val"]["loss"] == pytest.approx(float(rows[-1]["val_loss"]), abs=1e-6)
    # the test figures are the kept epoch's: its per-conversation sums give the same loss
    table = {k: [float(r[k]) for r in csv.DictReader(paths.rows_file("phase2").open())] for k in ("targets", "cvfp")}
    assert sum(table["cvfp"]) / sum(table["targets"]) == pytest.approx(m["test"]["loss"], abs=1e-6)
    assert sum(table["targets"]) == 9 + 6 + 12 - 3  # one target fewer than tokens per sample
    best = torch.load(paths.PHASE2_BEST, weights_only=True)
    assert set(best) == {"model_state_dict", "config", "epoch", "phase2_history"}
    side = json.loads(paths.sidecar(paths.PHASE2_BEST).read_text())
    assert best["epoch"] == side["best_epoch"] == m["best_epoch"] == len(best["phase2_history"]["val_loss"])
    assert not any(Path("resume").glob("*.pt"))
    load_for_generation(paths.PHASE2_BEST)

    # interrupted after epoch 2 (a checkpoint was saved), then re-run: the same outputs
    paths.PHASE2_BEST.unlink()
    orig = T.run_unit

    def dying(self, e):
        if e == 2:
            raise KeyboardInterrupt
        return orig(self, e)

    monkeypatch.setattr(T, "run_unit", dying)
    with pytest.raises(KeyboardInterrupt):
        phase2.run(cfg)
    assert Path("resume/phase2.pt").exists()
    monkeypatch.setattr(T, "run_unit", orig)
    caplog.clear()
    with caplog.at_level("INFO"):
        m2 = phase2.run(cfg)
    assert "resumed phase2 after epoch 2" in caplog.text
    again = torch.load(paths.PHASE2_BEST, weights_only=True)
    for k, v in best["model_state_dict"].items():
        assert torch.equal(v, again["model_state_dict"][k]), k
    assert again["phase2_history"] == best["phase2_history"] and again["epoch"] == best["epoch"]
    assert m2["val"] == m["val"] and m2["test"] == m["test"] and m2["optimizer_steps"] == m["optimizer_steps"]
    assert m2["last"] == m["last"]


def test_stage_needs_the_gate(tmp_path, monkeypatch):
    from newllm import paths
    from newllm.stages import phase2_lm as phase2
    stage_inputs(tmp_path, monkeypatch)
    paths.GATE.unlink()
    with pytest.raises(CheckpointError, match="gate"):
        phase2.run(from_dict(PARAMS, phase2.SECTIONS))


def test_stage_ignores_an_unreadable_resume_state(tmp_path, monkeypatch, caplog):
    from newllm import paths
    from newllm.cvfp.phase2 import Phase2Trainer as T
    from newllm.stages import phase2_lm as phase2
    stage_inputs(tmp_path, monkeypatch)
    cfg = from_dict(PARAMS, phase2.SECTIONS)
    ref = phase2.run(cfg)
    ref_w = torch.load(paths.PHASE2_BEST, weights_only=True)["model_state_dict"]
    orig = T.run_unit

    def dying(self, e):
        if e == 1:
            raise KeyboardInterrupt
        return orig(self, e)

    monkeypatch.setattr(T, "run_unit", dying)
    with pytest.raises(KeyboardInterrupt):
        phase2.run(cfg)
    monkeypatch.setattr(T, "run_unit", orig)
    state = torch.load("resume/phase2.pt", weights_only=True)
    state["trainer"]["optimizer"] = {"state": {}, "param_groups": []}  # another layout; model already loaded
    torch.save(state, "resume/phase2.pt")
    m = phase2.run(cfg)
    assert "unreadable state" in caplog.text
    assert m["val"] == ref["val"] and m["last"] == ref["last"]
    for k, v in torch.load(paths.PHASE2_BEST, weights_only=True)["model_state_dict"].items():
        assert torch.equal(v, ref_w[k]), k
