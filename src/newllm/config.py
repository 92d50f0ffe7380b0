"""The one typed configuration of the project, read from ``params.yaml``.

Every section is a frozen dataclass; every field carries its own check. The
first stage (check_inputs) validates every section before any other stage runs, and each
stage validates the sections it reads (``newllm.pipeline``) before any work, so a bad value
stops the run with a message naming the key, the value and what is allowed (``ConfigError``).
The field checks are ``newllm.checks``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from newllm.checks import F, boolean, choice, integer, number, string, string_list
from newllm.diversity import DEFAULT as DIVERSITY_DEFAULT
from newllm.diversity import DIVERSITY
from newllm.errors import ConfigError

# ---------------------------------------------------------------------------
# sections

MAX_QUADRATIC_BATCH = 16384  # batch_tokens at most, with a diversity objective that holds a b x b matrix
# learning-rate schedules of newllm.train.optim
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class DataConfig:
    source: str = F("chatterbot", choice("ultrachat", "chatterbot", "jsonl"),
                    "where conversations come from")
    path: str = F("", string(), "file for source=jsonl (JSONL or Parquet, ultrachat_200k row schema)")
    num_samples: int = F(50, integer(1, 10_000_000), "training conversations (x max_seq_length tokens)")
    val_fraction: float = F(0.2, number(0, 1, lo_open=True, hi_open=True),
                            "validation rows = ceil(val_fraction * num_samples): what every choice is made on")
    test_fraction: float = F(0.2, number(0, 1, lo_open=True, hi_open=True),
                             "test rows = ceil(test_fraction * num_samples), at least min_test_rows: what every "
                             "LM figure is reported on")
    min_test_rows: int = F(50, integer(1, 10_000_000), "test rows at least (a small scale's interval needs "
                           "conversations)")
    split_seed: int = F(0, integer(0, 2**31 - 1), "seed of the row permutation that cuts train/val/test "
                        "(separate from seed: the splits stay when seed changes)")
    max_seq_length: int = F(128, integer(2, 1_000_000), "GPT-2 tokens kept per sample")
    tokenizer: str = F("gpt2-offline", choice("gpt2", "gpt2-offline"),
                       "gpt2 from the Hugging Face Hub, or the same ids built offline")
    hub_dataset: str = F("HuggingFaceH4/ultrachat_200k", string(False), "Hub dataset for source=ultrachat")
    train_split: str = F("train_sft", string(False), "source=ultrachat: the Hub split of the training rows")
    val_split: str = F("test_sft", string(False), "source=ultrachat: the held-out Hub split that validation "
                       "and test rows come from (disjoint, by a hash of prompt_id)")

    def validate(self) -> None:
        if self.source == "jsonl" and not self.path:
            raise ConfigError("data.path", self.path,
                              "a JSONL or Parquet file path when data.source is 'jsonl'")

    @property
    def num_val(self) -> int:
        return max(1, math.ceil(self.val_fraction * self.num_samples))

    @property
    def num_test(self) -> int:
        return max(self.min_test_rows, math.ceil(self.test_fraction * self.num_samples))


@dataclass(frozen=True)
class ModelConfig:
    context_dim: int = F(768, integer(1, 65536), "d_c")
    embed_dim: int = F(768, integer(1, 65536), "d_e")
    num_layers: int = F(1, integer(1, 256), "L")
    layernorm_mix: float = F(1.0, number(0, 1), "m: x <- (1-m) x + m LN(x) after each layer")
    layernorm_trainable: bool = F(True, boolean, "LayerNorm scale/shift trainable (original: yes)")
    pretrained_embeddings: bool = F(False, boolean, "frozen GPT-2 wte (needs embed_dim 768)")
    pretrained_name: str = F("gpt2", string(False), "Hub id or local directory of the GPT-2 model")
    vocab_size: int = F(50257, integer(2, 10_000_000), "GPT-2 vocabulary")
    tie_embeddings: bool = F(True, boolean, "Phase 2's head weight is the embedding matrix (logits from x')")


@dataclass(frozen=True)
class Phase1Config:
    stream: str = F("sample", choice("sample", "corpus"),
                    "sample: context resets per conversation; corpus: one stream (original)")
    max_iterations: int = F(10, integer(1, 10_000), "passes at most, pass 0 (untrained forward) included")
    learning_rate: float = F(0.002, number(0, 10, lo_open=True), "Adam lr")
    dist_reg_weight: float = F(0.7, number(0, 1), "w in (1-w) L_cvfp + w L_div")
    diversity: str = F(DIVERSITY_DEFAULT, choice(*DIVERSITY),
                       "the diversity objective L_div (docs/objectives.md)")
    uniformity_temperature: float = F(2.0, number(0, 1000, lo_open=True), "t of diversity: uniformity")
    uniformity_anchors: int = F(0, integer(0), "diversity: uniformity compares each context with this many "
                                "of its batch's (every ceil(b/K)-th); 0 = every pair")
    uniformity_group_size: int = F(256, integer(0), "diversity: uniformity takes the pairs within interleaved "
                                   "groups of about this many contexts (ceil(b/K) groups); 0 = every pair")
    vicreg_variance_target: float = F(1.0, number(0, lo_open=True), "gamma of diversity: vicreg (target std per dim)")
    vicreg_cov_weight: float = F(0.04, number(0), "covariance weight of diversity: vicreg")
    centroid_weight: float = F(0.1, number(0), "weight of |mean(C)|^2 in diversity: origin_anchored")
    context_noise_std: float = F(0.01, number(0, 100), "sigma of the context noise in training")
    ema_momentum: float = F(0.99, number(0, 1, hi_open=True), "momentum of the context EMA mu")
    convergence_threshold: float = F(0.05, number(0, lo_open=True), "per-token MSE below which it converged")
    min_converged_ratio: float = F(0.95, number(0, 1), "early stop when this fraction converged")
    batch_tokens: int = F(512, integer(0), "tokens per optimizer step; 1 = original online; 0 = one step per pass")
    chunk_tokens: int = F(8192, integer(1), "tokens per forward/backward chunk (bounds memory)")
    gradient_clip: float = F(1.0, number(0, lo_open=True), "gradient-norm clip")
    checkpoint_every: int = F(1, integer(1), "rolling resume checkpoint every N passes")

    def validate(self) -> None:
        if self.uniformity_anchors == 1:
            raise ConfigError("phase1.uniformity_anchors", 1, "0 (every pair) or at least 2")
        if self.uniformity_group_size == 1:
            raise ConfigError("phase1.uniformity_group_size", 1, "0 (every pair) or at least 2")
        if self.uniformity_anchors and self.uniformity_group_size:
            raise ConfigError("phase1.uniformity_group_size", self.uniformity_group_size,
                              f"0 while phase1.uniformity_anchors is set ({self.uniformity_anchors}): "
                              f"choose one pair set")
        div = DIVERSITY[self.diversity]
        if div.batch_level and self.dist_reg_weight > 0:
            if self.batch_tokens == 1:
                raise ConfigError("phase1.batch_tokens", self.batch_tokens,
                                  f"at least 2 with phase1.diversity: {self.diversity} (a statistic of the "
                                  f"batch's contexts), or diversity ema_distance/none for the online algorithm")
            if div.quadratic and not 0 < self.batch_tokens <= MAX_QUADRATIC_BATCH:
                raise ConfigError("phase1.batch_tokens", self.batch_tokens,
                                  f"between 2 and {MAX_QUADRATIC_BATCH} with phase1.diversity: {self.diversity} "
                                  f"(it holds a batch x batch matrix)")


@dataclass(frozen=True)
class ValidateConfig:
    min_train_er_pct: float = F(85.0, number(0, 100), "seed criterion: train ER %")
    min_val_er_pct: float = F(75.0, number(0, 100), "seed criterion: validation ER %")
    max_final_diff: float = F(0.001, number(0), "seed criterion: final_diff")
    convergence_passes: int = F(5, integer(1, 1000), "frozen passes of the convergence check")
    cosine_pairs: int = F(20000, integer(1), "sampled pairs for the mean pairwise cosine")
    enforce: bool = F(False, boolean, "a failed verdict stops the pipeline")


@dataclass(frozen=True)
class Phase2Config:
    epochs: int = F(10, integer(1, 100_000), "epochs (one pass over the training tokens each)")
    learning_rate: float = F(0.001, number(0, 10, lo_open=True), "peak learning rate (of the schedule)")
    gradient_clip: float = F(1.0, number(0, lo_open=True), "gradient-norm clip")
    batch_tokens: int = F(1024, integer(0), "tokens per optimizer step; 0 = one full-batch step per epoch (original)")
    chunk_tokens: int = F(2048, integer(1), "tokens per logits chunk (bounds memory: chunk x vocab)")
    freeze_context: bool = F(False, boolean, "true: only the head trains")
    predict_from: str = F("token", choice("token", "context"), "logits from x' (original) or from c")
    checkpoint_every: int = F(1, integer(1), "rolling resume checkpoint every N epochs")
    early_stop_patience: int = F(2, integer(0), "stop after N epochs without a better validation loss; 0 = never")
    freeze_embeddings: bool = F(False, boolean, "the embedding E and LN_e stay as Phase 1 left them")
    context_noise_std: float = F(0.0, number(0, 100), "sigma of noise on the carried context in training")
    weight_decay: float = F(0.1, number(0, 10), "AdamW decoupled weight decay of the matrices; 0 = Adam")
    dropout: float = F(0.1, number(0, 1, hi_open=True), "dropout on the head's input in training")
    lr_schedule: str = F("cosine", choice(*SCHEDULES), "constant, or cosine: linear warm-up over "
                         "warmup_fraction of the steps, then a cosine down to min_lr_ratio x learning_rate")
    warmup_fraction: float = F(0.05, number(0, 1), "lr_schedule cosine: fraction of the optimizer steps of warm-up")
    min_lr_ratio: float = F(0.1, number(0, 1), "lr_schedule cosine: the last step's rate / learning_rate")


@dataclass(frozen=True)
class TransformerConfig:
    num_layers: int = F(0, integer(0, 256), "blocks; 0 = CVFP's layer parameters in whole blocks (at least 1)")
    num_heads: int = F(0, integer(0, 1024), "attention heads; 0 = width 64 per head where the width allows")
    ff_mult: int = F(4, integer(1, 64), "feed-forward width / model width")
    dropout: float = F(0.1, number(0, 1, hi_open=True), "dropout in the blocks and on the embeddings")
    tie_embeddings: bool = F(True, boolean, "head weight = embedding matrix")
    epochs: int = F(10, integer(1, 100_000), "epochs (as phase2.epochs)")
    learning_rate: float = F(0.0003, number(0, 10, lo_open=True), "peak learning rate (of the schedule)")
    batch_tokens: int = F(1024, integer(0), "tokens per optimizer step (whole sequences; 0 = all)")
    chunk_tokens: int = F(2048, integer(1), "targets per head/CE chunk (bounds memory)")
    gradient_clip: float = F(1.0, number(0, lo_open=True), "gradient-norm clip")
    weight_decay: float = F(0.1, number(0, 10), "AdamW decoupled weight decay of the matrices; 0 = Adam")
    early_stop_patience: int = F(2, integer(0), "stop after N epochs without improvement; 0 = never")
    checkpoint_every: int = F(1, integer(1), "rolling resume checkpoint every N epochs")
    lr_schedule: str = F("cosine", choice(*SCHEDULES), "constant, or cosine: linear warm-up over "
                         "warmup_fraction of the steps, then a cosine down to min_lr_ratio x learning_rate")
    warmup_fraction: float = F(0.05, number(0, 1), "lr_schedule cosine: fraction of the optimizer steps of warm-up")
    min_lr_ratio: float = F(0.1, number(0, 1), "lr_schedule cosine: the last step's rate / learning_rate")


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = F("auto", choice("auto", "cpu", "cuda"), "auto picks CUDA when available")
    precision: str = F("fp32", choice("fp32", "bf16", "fp16"), "autocast dtype (fp16 uses a GradScaler)")
    threads: int = F(0, integer(0, 1024), "torch CPU threads; 0 = all cores")


# Directories `dvc repro` deletes before it re-runs the stage that writes them (dvc.yaml
# outs): a rolling checkpoint kept there would be lost exactly when it is needed.
DVC_OUTPUT_DIRS = ("data/raw", "data/tokens", "data/tokenizer", "data/contexts")


def _inside(path: str, parent: str) -> bool:
    """Whether ``path`` is ``parent`` or below it; relative paths are relative to the repo
    root, the working directory of every stage."""
    p = os.path.normpath(os.path.join(os.getcwd(), os.path.expanduser(path)))
    q = os.path.normpath(os.path.join(os.getcwd(), parent))
    return p == q or p.startswith(q + os.sep)


@dataclass(frozen=True)
class ResumeConfig:
    enabled: bool = F(True, boolean, "keep and use rolling checkpoints")
    dir: str = F("resume", string(False), "where rolling checkpoints live (not a DVC output)")
    mirror_dir: str = F("", string(), "optional copy of the rolling checkpoints, e.g. on Google Drive")

    def validate(self) -> None:
        for key, value in (("resume.dir", self.dir), ("resume.mirror_dir", self.mirror_dir)):
            bad = next((d for d in DVC_OUTPUT_DIRS if value and _inside(value, d)), None)
            if bad:
                raise ConfigError(key, value, f"a directory outside the DVC outputs ({bad}/ is deleted "
                                              f"by `dvc repro` before its stage re-runs), e.g. 'resume'")
        if self.mirror_dir and (Path(self.mirror_dir).expanduser().resolve()
                                == Path(self.dir).expanduser().resolve()):
            raise ConfigError("resume.mirror_dir", self.mirror_dir,
                              "'' (no mirror) or a directory other than resume.dir")


@dataclass(frozen=True)
class ReportConfig:
    prompts: list = F(["Hello, how are you?", "What is the capital of France?",
                       "Can you help me write a function"], string_list, "prompts continued in the report")
    max_new_tokens: int = F(30, integer(1, 10_000), "tokens generated per prompt")
    temperature: float = F(0.0, number(0), "0 = greedy")
    top_k: int = F(0, integer(0), "0 = no top-k filter")
    bootstrap_resamples: int = F(2000, integer(1000, 1_000_000), "draws of the test conversations behind every "
                                 "95% interval (newllm.bootstrap)")
    bootstrap_seed: int = F(0, integer(0, 2**31 - 1), "seed of those draws")


@dataclass(frozen=True)
class DistConfig:
    nproc: int = F(1, integer(1, 1024), "processes launched by torchrun for phase1/phase2")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "phase1": Phase1Config,
    "validate": ValidateConfig,
    "phase2": Phase2Config,
    "runtime": RuntimeConfig,
    "resume": ResumeConfig,
    "report": ReportConfig,
    "dist": DistConfig,
    "transformer": TransformerConfig,
}


@dataclass(frozen=True)
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    phase1: Phase1Config = field(default_factory=Phase1Config)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    phase2: Phase2Config = field(default_factory=Phase2Config)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def section_dict(self, name: str) -> dict:
        return dataclasses.asdict(getattr(self, name))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build_section(name: str, raw: Any) -> Any:
    cls = SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(name, raw, "a mapping of keys (see params.yaml)")
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{name}.{key}", raw[key],
                              "a known key; unknown key (typo?). Allowed keys: " + ", ".join(known))
    values = {}
    for key, f in known.items():
        v = raw.get(key, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        if isinstance(v, int) and not isinstance(v, bool) and f.type in ("float",):
            v = float(v)
        problem = f.metadata["check"](v)
        if problem:
            raise ConfigError(f"{name}.{key}", v, problem)
        values[key] = v
    obj = cls(**values)
    if hasattr(obj, "validate"):  # checks that span several keys of the section
        obj.validate()
    return obj


TOP_LEVEL_KEYS = ("seed", *SECTIONS)

def from_dict(raw: Any, sections: list[str] | None = None) -> Config:
    """Build and validate a Config. Only ``sections`` (default: all) are checked; the
    others keep their defaults, so a stage never fails on another stage's section.
    Unknown top-level keys (a misspelt section) are refused by every stage."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml", type(raw).__name__, "a YAML mapping of sections")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(str(key), raw[key], "a known top-level key; unknown key (typo?). "
                                                  "Allowed keys: " + ", ".join(TOP_LEVEL_KEYS))
    wanted = list(SECTIONS) if sections is None else list(sections)
    for name in wanted:
        if name not in SECTIONS:
            raise ValueError(f"unknown config section {name!r}")
    seed = raw.get("seed", 0)
    problem = integer(0, 2**31 - 1)(seed)
    if problem:
        raise ConfigError("seed", seed, problem)
    built = {name: _build_section(name, raw.get(name)) for name in wanted}
    cfg = Config(seed=seed, **built)
    _cross_checks(cfg, wanted)
    return cfg


def _cross_checks(cfg: Config, wanted: list[str]) -> None:
    if "phase2" in wanted and "model" in wanted and cfg.model.tie_embeddings:
        if cfg.phase2.freeze_embeddings:
            raise ConfigError("phase2.freeze_embeddings", True, "false when model.tie_embeddings is true "
                                                                "(a frozen, tied embedding would freeze the head)")
        if cfg.phase2.freeze_context:
            raise ConfigError("phase2.freeze_context", True, "false when model.tie_embeddings is true (the "
                                                             "head would train the embedding under fixed features)")
        if cfg.phase2.predict_from != "token":
            raise ConfigError("phase2.predict_from", cfg.phase2.predict_from,
                              "'token' when model.tie_embeddings is true (the head reads the token stream)")
    if "model" in wanted and cfg.model.pretrained_embeddings and cfg.model.embed_dim != 768:
        raise ConfigError("model.embed_dim", cfg.model.embed_dim,
                          "768 when model.pretrained_embeddings is true (GPT-2 wte is 768-wide)")
    if "model" in wanted and cfg.model.pretrained_embeddings and cfg.model.vocab_size != 50257:
        raise ConfigError("model.vocab_size", cfg.model.vocab_size,
                          "50257 when model.pretrained_embeddings is true (GPT-2 wte has 50257 rows)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a params file must not."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        except TypeError:  # unhashable key: let the default constructor report it
            break
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load(path: str | Path = "params.yaml", sections: list[str] | None = None) -> Config:
    path = Path(path)
    if not path.exists():
        raise ConfigError(str(path), "missing", "an existing params.yaml")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (safe)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(str(path), "unparsable YAML", f"valid YAML ({where}{problem})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), "not UTF-8", f"a UTF-8 text file ({e})") from None
    return from_dict(raw, sections)


def describe() -> str:
    """The Markdown table of every key, its default and meaning: README's "Parameters" table is
    this output (`python -m newllm.config`), and a test keeps the two equal."""
    rows = ["| key | default | meaning |", "|---|---|---|", "| `seed` | `0` | seed of every random draw |"]
    for name, cls in SECTIONS.items():
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append(f"| `{name}.{f.name}` | `{default!r}` | {f.metadata.get('doc', '')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(describe())
