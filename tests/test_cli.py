"""The stage entry point (``newllm.cli.stage_main``) through the real stage scripts: a bad
params.yaml, a missing device or an unusable data source stops the stage at once with exit 2,
one `error: ...` line naming the key and what is allowed, no traceback, no file written or
changed. One case per kind of fault; every params rule is checked in process by
tests/test_config.py.

Every case runs in a copy of a complete tiny run, so a stage that did not check first would
find valid inputs and start computing."""
from __future__ import annotations

import pytest
import torch

from helpers.chain import (
    assert_clean_error,
    copy_run,
    run_stage,
    snapshot,
    write_params,
)

pytestmark = pytest.mark.slow
P1, VAL, FETCH = "phase1_fixed_point", "validate_rank", "fetch_ultrachat"
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")

# (stage, params: a dict merged into the tiny params, or the whole file as text, or None for
# `--params nope.yaml`; then what the error line names)
CASES = [
    pytest.param(P1, {"model": {"context_dim": 0}}, "params.yaml: model.context_dim = 0", "an integer >= 1",
                 id="value-out-of-range"),
    pytest.param(FETCH, {"data": {"num_sample": 6}}, "data.num_sample", "unknown key (typo?)", id="misspelt-key"),
    pytest.param(P1, {"resume": {"dir": "data/contexts/ckpt"}}, "resume.dir",
                 "outside the DVC outputs (data/contexts/", id="keys-that-disagree"),
    pytest.param(VAL, "seed: 0\nphase1: [unclosed\n", "params.yaml", "valid YAML", id="unparsable-yaml"),
    pytest.param(VAL, None, "nope.yaml", "an existing params.yaml", id="params-file-missing"),
    pytest.param(P1, {"runtime": {"device": "cuda"}}, "runtime.device = 'cuda'", "use runtime.device: auto or cpu",
                 id="device-missing", marks=needs_no_cuda),
    pytest.param(FETCH, {"data": {"source": "jsonl", "path": "no/such/file.jsonl"}}, "data.path",
                 "give a JSONL or Parquet file", id="data-file-missing"),
]


@pytest.mark.parametrize("stage, params, key, allowed", CASES)
def test_a_bad_setting_stops_the_stage_before_any_work(prepared_run, tmp_path, stage, params, key, allowed):
    d = copy_run(prepared_run, tmp_path / "run")
    args: tuple[str, ...] = ()
    if params is None:
        args = ("--params", "nope.yaml")
    elif isinstance(params, str):
        (d / "params.yaml").write_text(params)
    else:
        write_params(d, params)
    before = snapshot(d)
    r = run_stage(d, stage, *args)
    assert_clean_error(r, key, allowed)
    assert " INFO " not in r.stderr, repr(r)  # stopped before the stage logged any work (no timing asserts)
    assert snapshot(d) == before  # nothing written, nothing changed
