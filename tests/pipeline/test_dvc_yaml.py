"""dvc.yaml agrees with the stage registry (``newllm.pipeline``), and every stage lists in it the
project modules that compute its outputs, so that editing one of them makes `dvc status` report
the stage (and `dvc repro` re-run it)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from helpers.repo import ROOT

SRC = ROOT / "src"
# plumbing that shapes no figure: parameter parsing, file writing, errors, devices, paths,
# data-parallel set-up and rolling resume checkpoints (each covered by its own tests)
PLUMBING = {"newllm", "newllm.cli", "newllm.config", "newllm.io", "newllm.errors", "newllm.runtime",
            "newllm.memory", "newllm.paths", "newllm.dist", "newllm.resume", "newllm.stages", "newllm.data",
            "newllm.pipeline",
            "newllm.cvfp", "newllm.train", "newllm.baselines", "newllm.html"}  # (empty package files)


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


def _imports(path: Path, package: str) -> set[str]:
    """newllm modules imported anywhere in ``path`` (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("newllm")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if not mod.startswith("newllm"):
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if _module_file(f"{mod}.{a.name}")}
    return {m for m in out if _module_file(m)}


def _closure(stage_script: Path, stage: str) -> set[str]:
    """Every project module the stage runs: its script's imports and its ``newllm.stages`` module
    (which ``newllm.cli.stage_main`` imports by name), followed transitively."""
    seen, todo = set(), [*_imports(stage_script, "stages"), f"newllm.stages.{stage}"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if m in PLUMBING:  # what plumbing imports (the config's tables) shapes no figure either
            continue
        f = _module_file(m)
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        todo.extend(_imports(f, pkg) - seen)
    return seen


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_code_it_runs(stage):
    spec = STAGES[stage]
    script = ROOT / spec["cmd"].split()[-1]
    deps = {d if isinstance(d, str) else next(iter(d)) for d in spec["deps"]}
    assert str(script.relative_to(ROOT)) in deps
    used = {str(_module_file(m).relative_to(ROOT)) for m in _closure(script, stage) if m not in PLUMBING}
    missing = sorted(used - deps)
    assert not missing, f"stage {stage} runs {missing} but dvc.yaml does not list them as deps"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_exist(stage):
    """A dep that names a moved or deleted file would make `dvc repro` fail (or silently
    track nothing)."""
    deps = {d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]}
    code = [d for d in deps if d.startswith(("src/", "stages/"))]
    assert code and all((ROOT / d).exists() for d in code), [d for d in code if not (ROOT / d).exists()]


def test_dvc_yaml_runs_the_registered_stages():
    """newllm.pipeline declares the stages once: dvc.yaml runs exactly them, each through its
    script, with params from the sections the stage validates and its metrics file as an output."""
    from newllm.pipeline import STAGES as REGISTERED

    assert list(STAGES) == [s.name for s in REGISTERED]
    for s in REGISTERED:
        spec = STAGES[s.name]
        assert spec["cmd"] == f"python stages/{s.name}.py", s.name
        params = [p if isinstance(p, str) else next(iter(p)) for p in spec.get("params", [])]
        assert {p.split(".")[0] for p in params} <= {"seed", *s.sections}, s.name
        outs = [o if isinstance(o, str) else next(iter(o)) for o in spec.get("outs", []) + spec.get("metrics", [])]
        assert s.metrics is None or str(s.metrics) in outs, s.name
