"""Corrupt, mismatched or hostile inputs, end to end through the stage scripts: each ends in a
clear `error: ...` (exit 2) naming the file and what to do, or in a documented skip counted in
the metrics; never a traceback, never a changed output.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from reliability_helpers import (
    assert_clean_error,
    copy_run,
    load_json,
    run_stage,
    snapshot,
    write_params,
)

from newllm.config import ModelConfig
from newllm.cvfp.model import build_model
from newllm.errors import CheckpointError
from newllm.io import torch_load

P1, VAL, P2, FETCH, TOK = "phase1_fixed_point", "validate_rank", "phase2_lm", "fetch_ultrachat", "tokenize_cache"


# ---------------------------------------------------------------------------
# ways to break a prepared run (each takes the run directory)


def truncate(rel: str, keep: float = 0.5):
    def f(d: Path) -> None:
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[: int(len(data) * keep)])
    return f


def garbage(rel: str):
    def f(d: Path) -> None:
        (d / rel).write_bytes(os.urandom(4096))
    return f


def save(rel: str, make):
    """Replace ``rel`` by torch.save(make(old object))."""
    def f(d: Path) -> None:
        old = torch_load(d / rel)
        torch.save(make(old), d / rel)
    return f


def write(rel: str, data: bytes):
    def f(d: Path) -> None:
        (d / rel).write_bytes(data)
    return f


def edit_json(rel: str, change):
    def f(d: Path) -> None:
        obj = json.loads((d / rel).read_text())
        change(obj)
        (d / rel).write_text(json.dumps(obj))
    return f


def set_params(update: dict):
    def f(d: Path) -> None:
        write_params(d, update)
    return f


def tokens(ids: list[int], offsets: list[int], dtype=torch.int32) -> dict:
    return {"tokens": torch.tensor(ids, dtype=dtype), "offsets": torch.tensor(offsets), "format": 1}


def other_model_state(**model) -> dict:
    cfg = ModelConfig(**{"context_dim": 16, "embed_dim": 16, "num_layers": 2, **model})
    return build_model(cfg, 0).state_dict()


def with_state(state: dict):
    return lambda ck: {**ck, "model_state_dict": state}


TOKENS, CKPT, SIDE = "data/tokens/train.pt", "models/phase1.pt", "models/phase1.json"

CASES = [
    # token caches
    pytest.param(P1, truncate(TOKENS), [TOKENS, "corrupt or truncated", "re-run"], id="tokens-truncated"),
    pytest.param(P1, garbage("data/tokens/val.pt"), ["data/tokens/val.pt", "corrupt or truncated"],
                 id="tokens-garbage"),
    pytest.param(P1, save(TOKENS, lambda o: o["tokens"].tolist()), [TOKENS, "not in the expected format"],
                 id="tokens-wrong-format"),
    pytest.param(P1, save(TOKENS, lambda o: {**o, "offsets": o["offsets"] * 2}), [TOKENS, "inconsistent offsets"],
                 id="tokens-bad-offsets"),
    pytest.param(P1, save(TOKENS, lambda o: tokens([1, 2, 60000, 3], [0, 2, 4])),
                 [TOKENS, "1 token ids outside the vocabulary [0, 50257)", "tokenize_cache"], id="tokens-out-of-vocab"),
    pytest.param(P1, set_params({"model": {"vocab_size": 1000}}),
                 [TOKENS, "outside the vocabulary [0, 1000)", "model.vocab_size"], id="vocab-smaller-than-tokenizer"),
    pytest.param(P1, save(TOKENS, lambda o: tokens([], [0])), [TOKENS, "holds no tokens: the dataset is empty"],
                 id="tokens-empty-dataset"),
    pytest.param(VAL, save("data/tokens/val.pt", lambda o: tokens([15496], [0, 1])),
                 ["data/tokens/val.pt holds 1 token", "needs at least 2", "data.val_fraction"], id="tokens-one-token"),
    # raw conversations (tokenize_cache reads what fetch_ultrachat wrote)
    pytest.param(TOK, write("data/raw/val.jsonl", b'{"messages": [{"role": "user", "content": "Hello"}]}\n'),
                 ["data/raw/val.jsonl gives 1 token", "at least 2 per split"], id="raw-one-token"),
    pytest.param(TOK, write("data/raw/train.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n'
                                                    b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'),
                 ["data/raw/train.jsonl line 2 is not UTF-8", "fetch_ultrachat"], id="raw-not-utf8"),
    pytest.param(TOK, write("data/raw/train.jsonl", b'{"prompt": "no messages"}\n'),
                 ["data/raw/train.jsonl line 1 is not a conversation", "fetch_ultrachat"], id="raw-no-messages"),
    pytest.param(TOK, write("data/raw/val.jsonl", b""), ["data/raw/val.jsonl holds no conversations"],
                 id="raw-empty"),
    # the Phase 1 checkpoint, its sidecar and contexts
    pytest.param(VAL, truncate(CKPT), [CKPT, "corrupt or truncated", "re-run"], id="checkpoint-truncated"),
    pytest.param(P2, truncate(CKPT, 0.9), [CKPT, "corrupt or truncated"], id="phase2-checkpoint-truncated"),
    pytest.param(VAL, save(CKPT, with_state(other_model_state(context_dim=8))),
                 [CKPT, "does not fit the configured model", "shape mismatch", "another model size"],
                 id="checkpoint-other-model-size"),
    pytest.param(P2, save(CKPT, with_state(other_model_state(vocab_size=1000))),
                 [CKPT, "does not fit the configured model", "embed.weight"], id="checkpoint-other-vocabulary"),
    pytest.param(VAL, save(CKPT, lambda ck: ck["model_state_dict"]), [CKPT, "has no model_state_dict"],
                 id="checkpoint-bare-state-dict"),
    pytest.param(VAL, save("data/contexts/val.pt", lambda o: {k: v[:, :8] for k, v in o.items()}),
                 ["data/contexts/val.pt", "does not match the token cache"], id="contexts-other-size"),
    pytest.param(VAL, write(SIDE, b'{"config": '), [SIDE, "not valid JSON"], id="sidecar-garbage"),
    pytest.param(VAL, edit_json(SIDE, lambda s: s["config"]["model"].update(context_dim="16")),
                 [SIDE, "invalid config", "model.context_dim"], id="sidecar-invalid-config"),
    pytest.param(P2, lambda d: (d / "data/gate.json").unlink(), ["data/gate.json is missing", "dvc repro"],
                 id="phase2-gate-missing"),
]


@pytest.mark.parametrize("stage, corrupt, needles", CASES)
def test_corrupt_input_is_a_clear_error_and_changes_nothing(prepared_run, tmp_path, stage, corrupt, needles):
    d = copy_run(prepared_run, tmp_path / "run")
    corrupt(d)
    before = snapshot(d)
    r = run_stage(d, stage)
    assert_clean_error(r, *needles)
    assert snapshot(d) == before


# ---------------------------------------------------------------------------
# source files: bad rows are skipped and counted, an unusable file is a clear error


def _row(text: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": text},
                                    {"role": "assistant", "content": text + " indeed"}]}).encode()


def test_bad_source_rows_are_skipped_and_counted_in_the_metrics(tmp_path):
    good = [_row(f"Sentence number {i} of the local file.") for i in range(5)]
    lines = [good[0],
             b'{"prompt": "no messages at all"}',
             json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
             b'{"messages": [{"role": "user", "content": "latin-1 bytes \xe9\xff"}]}',
             good[1],
             b"this line is not json",
             json.dumps({"messages": [{"role": "user", "content": "   "}]}).encode(),
             json.dumps({"messages": "not a list"}).encode(),
             good[2], good[3], good[4]]
    (tmp_path / "chats.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    write_params(tmp_path, {"data": {"source": "jsonl", "path": "chats.jsonl", "num_samples": 3,
                                     "val_fraction": 0.2, "min_test_rows": 1, "max_seq_length": 16}})
    for stage in (FETCH, TOK):
        r = run_stage(tmp_path, stage)
        assert r.returncode == 0, repr(r)
    counts = {"no_messages": 2, "non_string_message": 1, "not_utf8": 1, "not_json": 1, "empty_text": 1}
    assert load_json(tmp_path / "data/raw/fetch_info.json")["skipped"] == counts
    m = load_json(tmp_path / "metrics/data.json")
    assert m["skipped_rows"] == {"total": 6, **counts}
    assert m["train"]["samples"] == 3 and m["val"]["samples"] == 1 and m["test"]["samples"] == 1


@pytest.mark.parametrize("content, needles", [
    pytest.param(b"", ["chats.jsonl is empty: no rows at all"], id="empty-file"),
    pytest.param(b'{"prompt": "x"}\n\xff\xfe\n[1, 2]\n',
                 ["only 0 usable rows (3 rows skipped: no_messages 2, not_utf8 1)", "data.num_samples"],
                 id="no-usable-row"),
])
def test_unusable_source_file_is_a_clear_error(tmp_path, content, needles):
    (tmp_path / "chats.jsonl").write_bytes(content)
    write_params(tmp_path, {"data": {"source": "jsonl", "path": "chats.jsonl"}})
    r = run_stage(tmp_path, FETCH)
    assert_clean_error(r, *needles)
    assert not (tmp_path / "data").exists()


def test_damaged_parquet_is_a_clear_error(tmp_path):
    (tmp_path / "chats.parquet").write_bytes(b"PAR1" + os.urandom(2048))
    write_params(tmp_path, {"data": {"source": "jsonl", "path": "chats.parquet"}})
    r = run_stage(tmp_path, FETCH)
    assert_clean_error(r, "chats.parquet cannot be read as Parquet", "ultrachat_200k row schema")
    assert not (tmp_path / "data").exists()


def test_report_skips_a_section_whose_checkpoint_is_damaged(prepared_run, tmp_path):
    d = copy_run(prepared_run, tmp_path / "run")
    assert (d / "models/phase2_best.pt").exists()
    truncate("models/phase2_best.pt")(d)
    r = run_stage(d, "report")
    assert r.returncode == 0, repr(r)
    assert "Traceback" not in r.stderr
    assert "models/phase2_best.pt is corrupt or truncated" in r.stderr  # the skipped section says why
    assert (d / "reports/report.html").stat().st_size > 0


# ---------------------------------------------------------------------------
# safe loading: a checkpoint carrying pickled objects is refused, nothing in it runs


class Payload:
    """Unpickling this would create ``marker`` (what a hostile checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class Plain:
    def __init__(self):
        self.x = 1


@pytest.mark.parametrize("obj", [
    pytest.param(lambda m: {"model_state_dict": {"w": torch.zeros(2)}, "extra": Payload(m)}, id="reduce-payload"),
    pytest.param(lambda m: {"model_state_dict": {"w": torch.zeros(2)}, "extra": Plain()}, id="class-instance"),
    pytest.param(lambda m: {"hook": os.system}, id="function"),
])
def test_torch_load_refuses_pickled_objects(tmp_path, obj):
    marker = tmp_path / "executed"
    path = tmp_path / "ckpt.pt"
    torch.save(obj(marker), path)
    with pytest.raises(CheckpointError, match=r"ckpt.pt holds objects other than tensors.*weights_only=True"):
        torch_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("stage, rel", [
    pytest.param(VAL, CKPT, id="validate-phase1-checkpoint"),
    pytest.param(P1, TOKENS, id="phase1-token-cache"),
])
def test_stage_refuses_a_checkpoint_carrying_code(prepared_run, tmp_path, stage, rel):
    d = copy_run(prepared_run, tmp_path / "run")
    marker = tmp_path / "executed"
    good = torch_load(d / rel)
    torch.save({**good, "extra": Payload(marker)}, d / rel)
    before = snapshot(d)
    r = run_stage(d, stage)
    assert_clean_error(r, rel, "holds objects other than tensors", "refusing to unpickle")
    assert not marker.exists()
    assert snapshot(d) == before


def test_generate_refuses_a_checkpoint_with_a_damaged_config(prepared_run, tmp_path):
    import subprocess
    import sys

    ck = torch_load(prepared_run / "models/phase2_best.pt")
    ck["config"]["model"]["context_dim"] = "16"
    torch.save(ck, tmp_path / "bad.pt")
    p = subprocess.run([sys.executable, "-m", "newllm.generate", "--checkpoint", str(tmp_path / "bad.pt"),
                        "--tokenizer", str(prepared_run / "data/tokenizer"), "--prompt", "Hello"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "bad.pt has an invalid model config (model.context_dim = '16'" in p.stderr
