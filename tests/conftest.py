"""Fixtures every test can use, the order in which xdist hands out the files, and the GPU skip.

Shared code lives in the ``helpers`` package (tests/ is on ``pythonpath``); test modules never
import one another."""
from __future__ import annotations

import os

import pytest

from helpers.repo import SHARED_SAMPLE, reproduce_once

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """One torch thread per test process: scripts/test.sh runs two xdist workers on a 2-core
    machine, where more intra-op threads only oversubscribe the cores (and OpenMP's spinning
    threads slow everything down when a core is busy elsewhere)."""
    import torch

    torch.set_num_threads(1)


# The longest files, longest first. scripts/test.sh hands whole files to the two workers in the
# order of the collection (``--dist loadfile --no-loadscope-reorder``): both start on a long one and
# the short files fill in at the end, so neither worker is left alone with a long file. The notebook
# comes first because it does not need the reproduced repository, which the sweep's worker builds
# meanwhile (the fixture ``reproduced``).
LONGEST_FIRST = ("pipeline/test_notebook.py", "pipeline/test_sweep.py", "pipeline/test_resume_kill9.py",
                 "pipeline/test_readme_sequence.py", "pipeline/test_dvc_failures.py", "pipeline/test_chain.py",
                 "pipeline/test_remote.py")


def _rank(item) -> tuple[int, int]:
    path = item.path.relative_to(item.config.rootpath / "tests").as_posix()
    first = LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
    return ("slow" not in item.keywords, first)


def pytest_collection_modifyitems(config, items):
    """The files in LONGEST_FIRST, then the other files with subprocess tests (``slow``), then the
    rest (a stable sort: the collection's order within each group). ``gpu`` tests run only where
    torch sees a CUDA device (scripts/test.sh runs them there)."""
    import torch

    items.sort(key=_rank)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
                                   "(run `bash scripts/test.sh` on a GPU machine; scripts/gpu_check.sh for the big runs)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One torch thread during the test (as pytest_configure set it), and the worker's count given
    back afterwards: an in-process stage sets the count of its params' runtime.threads."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """The DVC repository in which `dvc repro` ran (helpers.repo.Reproduced): the pipeline tests
    start from a copy of it instead of each reproducing the same run. One per test session: the
    first xdist worker that asks builds it, the other waits (basetemp's parent is the session's)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return reproduce_once(base / "reproduced")


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
