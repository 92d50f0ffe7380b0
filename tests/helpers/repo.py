"""A real temporary git + DVC repository holding a copy of this project, and the tiny
configuration every pipeline test starts from."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
# every .gitignore of the repository (the DVC outputs' entries are committed, so a run leaves
# only dvc.lock to commit)
IGNORE_FILES = (".gitignore", "data/.gitignore", "models/.gitignore", "metrics/.gitignore", "metrics/rows/.gitignore",
                "reports/.gitignore")
SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "chat_sample.jsonl"

# A tiny configuration every pipeline test starts from (few hundred tokens).
TINY_PARAMS = {
    "data": {"source": "chatterbot", "num_samples": 6, "val_fraction": 0.5, "min_test_rows": 2, "max_seq_length": 32},
    "model": {"context_dim": 16, "embed_dim": 16, "num_layers": 2},
    "phase1": {"max_iterations": 3, "batch_tokens": 64, "chunk_tokens": 128},
    "validate": {"convergence_passes": 2, "cosine_pairs": 200},
    "phase2": {"epochs": 2, "batch_tokens": 128, "chunk_tokens": 64},
    "transformer": {"epochs": 2, "batch_tokens": 128, "chunk_tokens": 64},
    "runtime": {"device": "cpu", "threads": 1},
    "report": {"max_new_tokens": 5},
}
# the README's scale (data.num_samples as in params.yaml, which its sequence edits); short rows
# keep the trainings small
README_SCALE = {"data": {"num_samples": 50, "max_seq_length": 32}}
# what the reproduced repository's first `dvc repro` ran, in three steps
REPRO_STEPS = (("tokenize_cache",), ("validate_rank",), ())


def deep_update(base: dict, upd: dict) -> dict:
    out = dict(base)
    for k, v in upd.items():
        out[k] = deep_update(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


class DvcRepo:
    """A git+DVC repo in a temp dir with this project's dvc.yaml, stages/ and src/."""

    def __init__(self, path: Path):
        self.path = path

    def run(self, *args: str, check: bool = True, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run(list(args), cwd=self.path, capture_output=True, text=True, env=e,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def dvc(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, **kw)

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def set_params(self, upd: dict) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(deep_update(self.params(), upd)))

    def repro(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.dvc("repro", *args, **kw)

    def ran_stages(self, out: str) -> list[str]:
        """Stage names `dvc repro` output says it ran, but check_inputs, which runs every time
        (``always_changed``: it checks params.yaml and fingerprints the data)."""
        names = []
        for line in out.splitlines():
            if line.startswith("Running stage '") and line.split("'")[1] != "check_inputs":
                names.append(line.split("'")[1])
        return names

    def up_to_date(self) -> bool:
        """`dvc status` lists nothing but check_inputs, which is always changed (it runs first at
        every `dvc repro`)."""
        out = self.dvc("status").stdout
        return out.strip() in ("Data and pipelines are up to date.", "check_inputs:\n\talways changed")

    def commit(self, msg: str = "state") -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", msg, "--allow-empty")


def make_dvc_repo(path: Path, params_update: dict | None = None) -> DvcRepo:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", *IGNORE_FILES):
        if (ROOT / name).exists():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, path / name)
    shutil.copytree(ROOT / "stages", path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    repo = DvcRepo(path)
    repo.run("git", "init", "-q")
    repo.run("git", "config", "user.email", "test@example.com")
    repo.run("git", "config", "user.name", "test")
    repo.dvc("init", "-q")
    # what `dvc config core.autostage true` and `core.analytics false` write, without two more
    # DVC processes per repository
    with (path / ".dvc" / "config").open("a") as f:
        f.write("[core]\n    autostage = true\n    analytics = false\n")
    repo.set_params(deep_update(TINY_PARAMS, params_update or {}))
    repo.commit("init")
    return repo


@dataclass(frozen=True)
class Reproduced:
    """A DVC repository (TINY_PARAMS at the README's scale, nothing committed after ``init``) in
    which ``dvc repro`` ran in REPRO_STEPS, and what each step printed. Read-only: a test works
    on its own ``copy``."""

    path: Path
    outputs: tuple[str, ...]

    def copy(self, dst: Path) -> DvcRepo:
        shutil.copytree(self.path, dst, symlinks=True)
        return DvcRepo(dst)


def reproduce_once(path: Path) -> Reproduced:
    """The Reproduced repository at ``path``, built by the first caller; callers in other
    processes (the xdist workers) wait for it under a file lock and then share it."""
    from filelock import FileLock

    done = path.with_name(path.name + ".json")
    with FileLock(str(path) + ".lock"):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # what a failed build left
            repo = make_dvc_repo(path, README_SCALE)
            outputs = [repo.repro(*step).stdout for step in REPRO_STEPS]
            done.write_text(json.dumps(outputs))
    return Reproduced(path, tuple(json.loads(done.read_text())))
