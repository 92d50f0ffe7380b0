"""The scale ladder (``newllm.ladder``) is a sweep (``newllm.sweep``) over data.num_samples: it
refuses names already used and reports failed experiments."""
from __future__ import annotations

from helpers.exp_show import exp_show
from newllm import experiments as ex
from newllm import ladder, sweep


def test_ladder_is_a_sweep_over_num_samples(monkeypatch):
    seen = {}
    monkeypatch.setattr(sweep, "run", lambda args, sets, varying=None, title="": seen.update(
        sets=sets, varying=varying, prefix=args.name_prefix, out=args.out) or 0)
    assert ladder.main(["--scales", "50,78", "--set", "phase2.epochs=2"]) == 0
    assert seen == {"sets": ["data.num_samples=50,78", "phase2.epochs=2"], "varying": {"data.num_samples"},
                    "prefix": "scale", "out": "reports/scales"}
    assert ladder.main(["--scales", "50,x"]) == 2
    assert ladder.main(["--set", "data.num_samples=3"]) == 2


def test_sweep_refuses_existing_names_and_reports_failures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setattr(ex, "exp_show", lambda all_commits=False: exp_show())
    assert ladder.main(["--scales", "78,100"]) == 2  # scale-78 exists
    assert "--force" in capsys.readouterr().err
    # a failed experiment: the comparison is still written, the exit code is 1 and names the log command
    monkeypatch.setattr(ex, "queue_points", lambda *a, **k: None)
    monkeypatch.setattr(ex, "run_queue", lambda jobs: None)
    monkeypatch.setattr(ex, "read_details", lambda rows, files=(): rows)
    assert ladder.main(["--scales", "50,999", "--out", str(tmp_path / "out/scales")]) == 1
    err = capsys.readouterr().err
    assert "FAILED: experiment scale-999 (failed)" in err and "dvc queue logs scale-999" in err
    assert (tmp_path / "out/scales.html").exists()
