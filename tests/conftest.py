"""Fixtures every test can use, the order in which xdist hands out the files, and the GPU skip.

Shared code lives in the ``helpers`` package (tests/ is on ``pythonpath``); test modules never
import one another."""
from __future__ import annotations

import os

import pytest

from helpers.repo import SHARED_SAMPLE, make_dvc_repo

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """One torch thread per test process: scripts/test.sh runs two xdist workers on a 2-core
    machine, where more intra-op threads only oversubscribe the cores (and OpenMP's spinning
    threads slow everything down when a core is busy elsewhere)."""
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The files with real-pipeline tests (``slow``) go first: scripts/test.sh hands whole files
    to the two workers in this order (``--dist loadfile --no-loadscope-reorder``), so both start
    on the long ones and the short files fill in after (no lone long test at the end). ``gpu``
    tests run only where torch sees a CUDA device (scripts/test.sh runs them there)."""
    import torch

    items.sort(key=lambda item: "slow" not in item.keywords)  # stable: file order otherwise
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
                                   "(run `bash scripts/test.sh` on a GPU machine; scripts/gpu_check.sh for the big runs)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny models: two xdist workers x two threads would only oversubscribe the cores."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def threads():
    """In-process stages set torch's thread count; give the worker its own back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def dvc_repo(tmp_path):
    return make_dvc_repo(tmp_path / "repo")


@pytest.fixture
def chat_sample():
    if not SHARED_SAMPLE.exists():
        pytest.skip(f"shared sample {SHARED_SAMPLE} is absent (only on the development machines)")
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory):
    """A complete tiny run made by the real stage scripts in this process, once per test worker
    (read-only: copy it with helpers.chain.copy_run before changing anything)."""
    from helpers.chain import run_chain_here, write_params

    d = tmp_path_factory.mktemp("prepared")
    write_params(d)
    run_chain_here(d)
    return d


@pytest.fixture(scope="session")
def tiny_report(prepared_run, tmp_path_factory):
    """(root, comparison, data) of the report stage's gathering on a private copy of the
    prepared run (read-only)."""
    from helpers.chain import copy_run
    from helpers.report import gather

    root = copy_run(prepared_run, tmp_path_factory.mktemp("report") / "run")
    comparison, data = gather(root)
    return root, comparison, data
