"""The HTML report: key figures, pass/fail cells, the failure banner, escaping, missing inputs.

Every input is synthetic and written here into a temp dir, following the files' contracts
(newllm.paths; the validate/phase1 writers; the phase2 metrics and epoch CSV contract).
"""
from __future__ import annotations

import json
import math
import re
import sys
import types
from pathlib import Path

import pytest

from newllm import paths
from newllm.config import Config, ReportConfig
from newllm.cvfp.model import parameter_counts as model_size
from newllm.html.common import fmt, get, has_remote_refs
from newllm.html.run_report import build_report

D_C, D_E, LAYERS, VOCAB = 64, 48, 2, 50257


def _write(root: Path, rel: Path, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def _json(root: Path, rel: Path, obj) -> None:
    _write(root, rel, json.dumps(obj, indent=2))


def _ctx_report(er_pct, cos, norm, attractor=False, near_zero=False, collapsed=False):
    return {"er": round(er_pct * D_C / 100, 4), "er_pct": er_pct, "mean_cos": cos, "mean_norm": norm,
            "global_attractor": attractor, "near_zero": near_zero, "collapsed": collapsed}


def write_run(root: Path, *, good: bool = True, phase2: bool = True, extra_config: dict | None = None) -> None:
    """A complete synthetic run: good=True passes the seed's criteria, False is a collapse."""
    _json(root, paths.DATA_METRICS, {
        "source": "chatterbot", "tokenizer": "gpt2-offline", "max_seq_length": 128, "vocab_size": VOCAB,
        "train": {"samples": 50, "tokens": 6400}, "val": {"samples": 10, "tokens": 1280,
                                                            "unseen_type_frac": 0.2137}})
    model = {"context_dim": D_C, "embed_dim": D_E, "num_layers": LAYERS, "layernorm_mix": 1.0,
             "layernorm_trainable": True, "pretrained_embeddings": False, "pretrained_name": "gpt2",
             "vocab_size": VOCAB}
    p1cfg = {"stream": "sample", "max_iterations": 10, "learning_rate": 0.002, "dist_reg_weight": 0.5,
             "context_noise_std": 0.01, "ema_momentum": 0.99, "convergence_threshold": 0.05,
             "min_converged_ratio": 0.95, "batch_tokens": 1024, "chunk_tokens": 8192, "gradient_clip": 1.0,
             "checkpoint_every": 1}
    runtime = {"device": "cpu", "precision": "fp32", "threads": 2}
    conf = {"seed": 0, "model": model, "phase1": p1cfg, "runtime": runtime, **(extra_config or {})}
    steps = 35 if good else 64000
    _json(root, paths.PHASE1_SIDECAR, {"config": conf, "embeddings": "random", "passes": 5, "pass_index": 4,
                                       "optimizer_steps": steps, "stopped_early": good,
                                       "train_tokens": 6400, "val_tokens": 1280})
    _json(root, paths.PHASE1_METRICS, {
        "tokens": 6400, "val_tokens": 1280, "passes": 5, "optimizer_steps": steps,
        "param_change": 0.0731 if good else 2.41, "stopped_early": good, "embeddings": "random",
        "final_cvfp_loss": 0.00173 if good else 0.0, "final_div_loss": -7.92 if good else -1403.2,
        "final_converged_frac": 0.962 if good else 1.0, "final_context_norm": 8.01 if good else 1402.7,
        "time_s": 41.37, "tokens_per_s": 774.2, "device": "cpu", "precision": "fp32", "peak_rss_mb": 1834.5})
    rows = ["pass_index,cvfp_loss,div_loss,total_loss,converged_frac,mean_diff_mse,mean_context_norm,"
            "optimizer_steps,time_s,tokens_per_s", "0,,,,0.0,,8.0,0,1.2,5333.3"]
    for k in range(1, 5):
        cv = 0.3 / 4 ** k if good else 0.5 / 10 ** k
        norm = 8.0 + 0.003 * k if good else 8.0 * 5 ** k
        conv = min(0.962, 0.3 * k) if good else 1.0
        rows.append(f"{k},{cv:.6g},{-norm:.6g},{0.5 * cv - 0.5 * norm:.6g},{conv},{cv:.6g},{norm:.6g},"
                    f"{k * (steps // 4)},{8.1 + k:.3g},{790 - k}")
    _write(root, paths.PHASE1_HISTORY, "\n".join(rows) + "\n")

    if good:
        tr = _ctx_report(88.1234, 0.0312, 8.0002)
        va = _ctx_report(79.4567, 0.0298, 7.9991)
    else:
        tr = _ctx_report(0.8312, 0.9991, 1402.7, attractor=True, collapsed=True)
        va = _ctx_report(0.8207, 0.9989, 1398.1, attractor=True, collapsed=True)
    un_t, un_v = _ctx_report(90.1011, 0.021, 8.0), _ctx_report(82.3011, 0.022, 8.0)
    final_diff = 0.000421 if good else 0.0
    crit = {"train_er": tr["er_pct"] >= 85, "val_er": va["er_pct"] >= 75, "final_diff": final_diff <= 0.001}
    _json(root, paths.VALIDATE_METRICS, {
        "passed": all(crit.values()), "criteria": crit,
        "thresholds": {"min_train_er_pct": 85.0, "min_val_er_pct": 75.0, "max_final_diff": 0.001},
        "train": {**tr, "er_pct_untrained": un_t["er_pct"], "tokens": 6400},
        "val": {**va, "er_pct_untrained": un_v["er_pct"], "tokens": 1280},
        "untrained": {"train": un_t, "val": un_v},
        "input": {"er": 44.1, "er_pct": 91.875}, "gaussian": {"er": 60.2, "er_pct": 94.0625},
        "final_diff": final_diff, "convergence_passes": 5, "collapsed": not good, "embeddings": "random",
        "optimizer_steps": steps, "time_s": 6.52, "peak_rss_mb": 1210.0})
    # normalised spectra: the input column is shorter (d_e < d_c), as validate writes it
    def spec(alpha, n):
        s = [(i + 1) ** -alpha for i in range(n)]
        tot = sum(s)
        return [x / tot for x in s]
    cols = {"train": spec(0.3 if good else 4.0, D_C), "val": spec(0.4 if good else 4.0, D_C),
            "train_untrained": spec(0.25, D_C), "input": spec(0.2, D_E)}
    lines = ["rank," + ",".join(cols)]
    for i in range(D_C):
        lines.append(f"{i + 1}," + ",".join(f"{c[i]:.8g}" if i < len(c) else "" for c in cols.values()))
    _write(root, paths.SPECTRUM, "\n".join(lines) + "\n")
    diffs = [0.31, 0.041, 0.0062, 0.0011, final_diff] if good else [3.2, 0.0, 0.0, 0.0, 0.0]
    _write(root, paths.CONVERGENCE, "pass,diff\n" + "".join(f"{j + 1},{d:.8g}\n" for j, d in enumerate(diffs)))

    if not phase2:
        return
    uni_ppl, bi_ppl, maj = 151.2, 243.9, 0.1254
    train_loss = 10.8 - 0.64 * 10 if good else 10.8 - 0.4 * 10
    final = {"loss": 4.9585, "ppl": 142.37, "acc": 0.1387} if good else {"loss": 6.7312, "ppl": 838.4,
                                                                         "acc": 0.0931}
    _json(root, paths.PHASE2_METRICS, {
        "val": final, "train": {"loss": train_loss, "ppl": math.exp(train_loss)},
        "baseline": {"unigram_ppl": uni_ppl, "bigram_ppl": bi_ppl, "majority_acc": maj,
                     "unigram_loss": math.log(uni_ppl), "bigram_loss": math.log(bi_ppl)},
        "best": {"epoch": 9, "val_loss": final["loss"] - 0.0012, "val_ppl": math.exp(final["loss"] - 0.0012)},
        "beats_unigram": final["ppl"] < uni_ppl, "beats_bigram": final["ppl"] < bi_ppl,
        "freeze_context": False, "predict_from": "token", "embeddings_trained": True,
        "phase1_passed_validation": good, "epochs": 10, "optimizer_steps": 20, "best_epoch": 9,
        "time_s": 123.4, "tokens_per_s": 518.6, "peak_rss_mb": 2950.1, "embeddings": "random",
        "precision": "fp32", "device": "cpu"})
    _json(root, paths.sidecar(paths.PHASE2_LATEST), {"config": {
        "seed": 0, "model": model, "runtime": runtime,
        "phase2": {"epochs": 10, "learning_rate": 0.002, "gradient_clip": 1.0, "batch_tokens": 4096,
                   "chunk_tokens": 2048, "freeze_context": False, "predict_from": "token",
                   "checkpoint_every": 1}}})
    ep = ["epoch,train_loss,train_ppl,val_loss,val_ppl,val_acc,optimizer_steps,time_s,tokens_per_s,"
          "unigram_ppl,bigram_ppl"]
    for e in range(1, 11):
        tl = 10.8 - 0.64 * e if good else 10.8 - 0.4 * e
        vl = max(final["loss"], 10.8 - 0.6 * e)
        ep.append(f"{e},{tl:.4f},{math.exp(tl):.2f},{vl:.4f},{math.exp(vl):.2f},"
                  f"{min(final['acc'], 0.02 * e):.4f},{2 * e},{12.3:.2f},{520 - e},{uni_ppl},{bi_ppl}")
    _write(root, paths.PHASE2_HISTORY, "\n".join(ep) + "\n")


def text_of(html: str) -> str:
    """Visible text (tags removed, entities kept) for simple assertions."""
    return re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]+"', "", html))


def cfg(**kw) -> ReportConfig:
    base = dict(prompts=["Hello, how are you?"], max_new_tokens=5, temperature=0.0, top_k=0)
    base.update(kw)
    return ReportConfig(**base)


# ---------------------------------------------------------------------------


def test_model_size_matches_spec_and_model():
    assert model_size({"context_dim": 768, "embed_dim": 768, "num_layers": 6, "vocab_size": 50257})["total"] \
        == 91_429_969
    torch = pytest.importorskip("torch")  # noqa: F841
    from newllm.config import ModelConfig
    from newllm.cvfp.model import CVFPModel, count_parameters
    mc = ModelConfig(context_dim=8, embed_dim=6, num_layers=3, vocab_size=50)
    for head in ("token", "context"):
        assert model_size(mc.__dict__, head)["total"] == count_parameters(CVFPModel(mc, head))


def test_helpers():
    assert get({"val.loss": 1.0}, "val.loss") == 1.0
    assert get({"val": {"loss": 2.0}}, "val.loss") == 2.0
    assert get({"val": {}}, "val.loss", "x") == "x"
    assert fmt(None) == "—" and fmt(6400) == "6,400" and fmt(88.1234) == "88.12" and fmt(0.0) == "0"
    assert has_remote_refs('<img src="https://x/y.png">') and has_remote_refs("<link href='//cdn/x.css'>")
    assert not has_remote_refs('<a href="#criteria">x</a><img src="data:image/png;base64,AAAA">')


def test_good_run_key_figures(tmp_path):
    write_run(tmp_path, good=True)
    html = build_report(tmp_path, cfg(), seed=0)
    txt = text_of(html)
    # header
    assert "6,400" in txt and "1,280" in txt and "50 samples" in txt
    assert "21.4% of validation token types" in txt
    assert f"{model_size({'context_dim': D_C, 'embed_dim': D_E, 'num_layers': LAYERS}) ['total']:,}" in txt
    assert "random" in txt and "cpu / fp32" in txt
    assert "dist_reg_weight" in txt and "predict_from" in txt  # both sidecars' params
    # verdict: green banner, no red
    assert 'class="banner ok"' in html and 'class="banner bad"' not in html
    assert "PASSED" in txt
    # criteria table
    for figure in ("88.12%", "79.46%", "0.000421", "90.10%", "91.88%", "94.06%", "82.30%", "&gt; 85%",
                   "&gt; 75%", "&lt; 0.001", "0.0731"):
        assert figure in txt, figure
    crit = html[html.index('id="criteria"'):html.index('id="passes"')]
    assert crit.count('<td class="pass">PASS</td>') == 3 and "FAIL" not in crit
    # phase 2
    p2 = text_of(html[html.index('id="phase2"'):html.index('id="generation"')])
    for figure in ("4.958", "142.4", "151.2", "243.9", "13.87%", "12.54%", "5.019"):
        assert figure in p2, figure
    assert "The model beats the unigram baseline" in p2 and "beats the bigram baseline" in p2
    assert "is above always predicting the most frequent token" in p2
    # timings
    tm = text_of(html[html.index('id="timings"'):])
    for figure in ("41.37", "774.2", "1,834", "123.4", "518.6", "2,950", "6.52"):
        assert figure in tm, figure
    # plots: passes, spectrum, convergence, phase2; nothing remote
    assert html.count('src="data:image/png;base64,') == 4
    assert not has_remote_refs(html)
    assert "http://" not in html and "https://" not in html
    # section order as specified
    order = [html.index(f'id="{a}"') for a in ("run", "criteria", "passes", "spectrum", "convergence",
                                                   "phase2", "generation", "timings")]
    assert order == sorted(order)
    # the generation section without a checkpoint says so
    gen = text_of(html[html.index('id="generation"'):html.index('id="timings"')])
    assert "not available" in gen and "phase2_best.pt" in gen


def test_failed_run_shows_red_banner_and_fail_cells(tmp_path):
    write_run(tmp_path, good=False)
    html = build_report(tmp_path, cfg(), seed=0)
    assert 'class="banner bad"' in html
    # the banner comes before any section
    assert html.index('class="banner bad"') < html.index("<section")
    banner = text_of(html[html.index('class="banner bad"'):html.index("<nav")])
    assert "FAILED" in banner and "COLLAPSED" in banner and "global attractor" in banner
    assert "does NOT beat the unigram baseline" in banner
    crit = html[html.index('id="criteria"'):html.index('id="passes"')]
    assert crit.count('<td class="fail">FAIL</td>') == 2  # train ER and val ER
    assert crit.count('<td class="pass">PASS</td>') == 1  # final_diff 0 (a collapsed fixed point)
    assert crit.count('<td class="fail">YES</td>') >= 4  # attractor + collapsed, train and val
    assert "0.83%" in text_of(crit) and "1,403" in text_of(crit)
    p2 = text_of(html[html.index('id="phase2"'):html.index('id="generation"')])
    assert "does NOT beat the unigram baseline" in p2 and "NOT above" in p2
    assert "exactly 0" in text_of(html[html.index('id="convergence"'):html.index('id="phase2"')])


def test_zero_optimizer_steps_is_flagged(tmp_path):
    write_run(tmp_path, good=True)
    for rel in (paths.PHASE1_METRICS, paths.VALIDATE_METRICS):
        m = json.loads((tmp_path / rel).read_text())
        m["optimizer_steps"] = 0
        m["param_change"] = 0.0
        (tmp_path / rel).write_text(json.dumps(m))
    html = build_report(tmp_path, cfg(), seed=0)
    assert 'class="banner bad"' in html
    assert "NO optimizer step" in text_of(html[:html.index("<nav")])
    assert "never trained" in text_of(html)


def test_missing_inputs_say_not_available(tmp_path):
    html = build_report(tmp_path, cfg(), seed=0)  # nothing has run
    for a in ("criteria", "passes", "spectrum", "convergence", "phase2", "generation", "timings"):
        start = html.index(f'id="{a}"')
        end = html.index("</section>", start)
        assert "not available" in html[start:end], a
    assert 'class="banner warn"' in html
    assert "data:image/png" not in html and not has_remote_refs(html)


def test_phase2_not_run_yet(tmp_path):
    write_run(tmp_path, good=True, phase2=False)
    html = build_report(tmp_path, cfg(), seed=0)
    p2 = text_of(html[html.index('id="phase2"'):html.index('id="generation"')])
    assert "not available" in p2 and "phase2_lm has not run" in p2
    assert html.count("data:image/png") == 3  # phase 1 plots are still there
    tm = text_of(html[html.index('id="timings"'):])
    assert "phase2_lm" in tm and "not available" in tm and "41.37" in tm


def test_unreadable_input_does_not_crash(tmp_path):
    write_run(tmp_path, good=True)
    (tmp_path / paths.VALIDATE_METRICS).write_text("{not json")
    (tmp_path / paths.SPECTRUM).write_text("")
    html = build_report(tmp_path, cfg(), seed=0)
    crit = text_of(html[html.index('id="criteria"'):html.index('id="passes"')])
    assert "not available" in crit and "unreadable" in crit
    assert "not available" in text_of(html[html.index('id="spectrum"'):html.index('id="convergence"')])


def _fake_generation(monkeypatch, root: Path, continuation: str):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers
    tok = tokenizers.Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (root / paths.TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
    tok.save(str(root / paths.TOKENIZER_DIR / "tokenizer.json"))
    (root / paths.PHASE2_BEST).write_bytes(b"fake checkpoint")
    calls = []
    mod = types.ModuleType("newllm.generate")

    def load_for_generation(checkpoint_path, device="cpu"):
        assert Path(checkpoint_path).exists() and device == "cpu"
        return "MODEL"

    def generate(model, tokenizer, prompt, max_new_tokens, temperature=0.0, top_k=0, seed=0):
        calls.append((prompt, max_new_tokens, temperature, top_k, seed))
        assert model == "MODEL" and tokenizer.token_to_id("hello") == 1
        if "boom" in prompt:
            raise RuntimeError("<oops>")
        return continuation

    mod.load_for_generation, mod.generate = load_for_generation, generate
    monkeypatch.setitem(sys.modules, "newllm.generate", mod)
    return calls


def test_generation_is_escaped_and_uses_report_params(tmp_path, monkeypatch):
    write_run(tmp_path, good=True, extra_config={"note": "<img src=x onerror=alert(1)>"})
    calls = _fake_generation(monkeypatch, tmp_path, "<script>alert('x')</script> & more\n\n\tend")
    c = cfg(prompts=["Hi <b>there</b>", "boom"], max_new_tokens=7, temperature=0.7, top_k=40)
    html = build_report(tmp_path, c, seed=123)
    assert calls == [("Hi <b>there</b>", 7, 0.7, 40, 123), ("boom", 7, 0.7, 40, 123)]
    assert "<script>" not in html and "<b>there</b>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html
    # line breaks and tabs are shown as marks, so a run of newlines cannot blow up the page
    assert ('&amp; more<span class="ws">↵</span><span class="ws">↵</span><span class="ws">⇥</span>end'
            in html)
    assert "Hi &lt;b&gt;there&lt;/b&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    gen = text_of(html[html.index('id="generation"'):html.index('id="timings"')])
    assert "generation failed" in gen and "&lt;oops&gt;" in gen
    assert "temperature 0.7" in gen and "top_k 40" in gen and "seed 123" in gen


def test_pipeline_run_writes_report(tmp_path, monkeypatch, capsys):
    from newllm.stages import report as stage
    write_run(tmp_path, good=True)
    monkeypatch.chdir(tmp_path)
    out = stage.run(Config(seed=0, report=cfg()))
    assert out == (tmp_path / paths.REPORT).resolve() and out.exists()
    assert str(out) in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not list(out.parent.glob(".*.tmp"))
    assert stage.SECTIONS == ["report"]


def test_generation_with_a_real_tiny_checkpoint(tmp_path):
    """Through the real newllm.generate API, when it exists, on a tiny CVFP checkpoint."""
    gen = pytest.importorskip("newllm.generate")
    if not hasattr(gen, "load_for_generation"):
        pytest.skip("newllm.generate has no load_for_generation yet")
    import dataclasses

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    from newllm.config import ModelConfig
    from newllm.cvfp.model import build_model

    words = ["[UNK]", "hello", "how", "are", "you", "?", "fine", "the", "capital", "paris", "<|endoftext|>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / paths.TOKENIZER_DIR).mkdir(parents=True)
    tok.save(str(tmp_path / paths.TOKENIZER_DIR / "tokenizer.json"))
    mc = ModelConfig(context_dim=8, embed_dim=8, num_layers=1, vocab_size=len(words))
    model = build_model(mc, seed=0)
    conf = {"seed": 0, "model": dataclasses.asdict(mc), "phase2": {"predict_from": "token"}}
    (tmp_path / "models").mkdir()
    torch.save({"model_state_dict": model.state_dict(), "config": conf, "epoch": 1},
               tmp_path / paths.PHASE2_BEST)
    c = cfg(prompts=["hello how are you ?", "the capital"], max_new_tokens=4)
    html = build_report(tmp_path, c, seed=0)
    assert html == build_report(tmp_path, c, seed=0)  # greedy and seeded: reproducible
    sec = html[html.index('id="generation"'):html.index('id="timings"')]
    assert "generation failed" not in sec and "not available" not in sec
    conts = re.findall(r'<span class="cont">([^<]*)</span>', sec)
    assert len(conts) == 3  # the legend's example span + one per prompt
    assert all(len(x.split()) == 4 for x in conts[1:]), conts
    assert "hello how are you ?" in sec and "greedy" in sec
