"""notebooks/colab.ipynb runs top to bottom here (nbclient, python3 kernel) in a temporary
DVC repo: the Colab-only cells skip themselves, NEWLLM_NOTEBOOK_TINY=1 picks the bundled
corpus, a tiny model and two tiny scales, and a temporary directory stands in for Drive."""
from __future__ import annotations

import json
import time

import nbformat
import pytest
from nbclient import NotebookClient

from helpers.repo import ROOT, DvcRepo, make_dvc_repo

NOTEBOOK = ROOT / "notebooks" / "colab.ipynb"


def execute(repo, drive, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("NEWLLM_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("NEWLLM_REPO", str(repo))
    monkeypatch.setenv("NEWLLM_DRIVE", str(drive))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(repo)}})
    client.execute()
    return nb


def output_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or "".join(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_and_a_new_session_restores_from_drive(tmp_path, monkeypatch):
    nbformat.validate(nbformat.read(NOTEBOOK, as_version=4))
    repo = make_dvc_repo(tmp_path / "content" / "new-llm")
    drive = tmp_path / "drive" / "MyDrive" / "new-llm"
    t0 = time.monotonic()
    nb = execute(repo.path, drive, monkeypatch)
    text = output_text(nb)
    print(f"notebook executed in {time.monotonic() - t0:.0f}s")

    assert "Colab: False" in text and "not on Colab" in text
    assert "nothing saved on Drive yet: a fresh start" in text
    assert (repo.path / "reports/report.html").stat().st_size > 10_000
    # both scales are experiments; the comparison covers them
    assert {"scale-6", "scale-8"} <= set(repo.dvc("exp", "list", "--name-only").stdout.split())
    assert json.loads((repo.path / "metrics/data.json").read_text())["train"]["tokens"] == 8 * 32
    assert "scale-6" in text and "scale-8" in text
    # Drive: the DVC remote, the small workspace files and the experiments
    assert any((drive / "dvcstore" / "files").rglob("*"))
    for rel in ("state/dvc.lock", "state/metrics/phase2.json", "state/reports/report.html",
                "state/experiments.bundle"):
        assert (drive / rel).is_file(), rel
    assert not any((drive / "resume").glob("*.pt"))  # rolling checkpoints cleared on success
    params = repo.params()
    assert params["resume"]["mirror_dir"] == str(drive / "resume")
    assert params["runtime"]["precision"] == "fp32" and params["data"]["source"] == "chatterbot"
    assert repo.up_to_date()

    # a new Colab session: /content is gone, Drive is not. A fresh clone, the notebook again:
    # nothing is recomputed, the experiments and the last scale's outputs come back.
    repo.run("git", "clone", "-q", str(repo.path), str(tmp_path / "content2" / "new-llm"))
    again = tmp_path / "content2" / "new-llm"
    t0 = time.monotonic()
    text = output_text(execute(again, drive, monkeypatch))
    print(f"second session in {time.monotonic() - t0:.0f}s")
    assert [line for line in text.splitlines() if "Running stage" in line and "check_inputs" not in line] == [], \
        text[-3000:]
    assert "restored" in text and "2 experiments from" in text
    assert "scale-6: done in an earlier session" in text and "scale-8: done in an earlier session" in text
    assert {"scale-6", "scale-8"} <= set(DvcRepo(again).dvc("exp", "list", "--name-only").stdout.split())
    for rel in ("models/phase2_best.pt", "models/phase1.pt", "data/tokens/train.pt", "reports/report.html"):
        assert (again / rel).is_file(), rel
    assert "check_inputs:\n\talways changed" in text or "Data and pipelines are up to date" in text
    assert "changed deps" not in text and "changed outs" not in text
