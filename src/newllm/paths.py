"""Every file a stage reads or writes, relative to the repo root (mirrors dvc.yaml)."""
from pathlib import Path

INPUTS = Path("data/inputs.json")  # check_inputs: params checked, the data source's fingerprint
SPLITS = ("train", "val", "test")  # data/raw/<split>.jsonl, data/tokens/<split>.pt
RAW_TRAIN = Path("data/raw/train.jsonl")
FETCH_METRICS = Path("metrics/fetch.json")
TOKENS_TRAIN = Path("data/tokens/train.pt")
TOKENS_VAL = Path("data/tokens/val.pt")
TOKENS_TEST = Path("data/tokens/test.pt")
TOKENIZER_DIR = Path("data/tokenizer")
DATA_METRICS = Path("metrics/data.json")

PHASE1_CKPT = Path("models/phase1.pt")
PHASE1_SIDECAR = Path("models/phase1.json")
CONTEXTS_TRAIN = Path("data/contexts/train.pt")
CONTEXTS_VAL = Path("data/contexts/val.pt")
CONTEXTS_TEST = Path("data/contexts/test.pt")
PHASE1_METRICS = Path("metrics/phase1.json")
PHASE1_HISTORY = Path("metrics/phase1_passes.csv")

VALIDATE_METRICS = Path("metrics/validate.json")
SPECTRUM = Path("metrics/spectrum.csv")
CONVERGENCE = Path("metrics/convergence.csv")
GATE = Path("data/gate.json")

BASELINES_METRICS = Path("metrics/baselines.json")
TRANSFORMER_METRICS = Path("metrics/transformer.json")
TRANSFORMER_HISTORY = Path("metrics/transformer_epochs.csv")

PHASE2_BEST = Path("models/phase2_best.pt")
PHASE2_METRICS = Path("metrics/phase2.json")
PHASE2_HISTORY = Path("metrics/phase2_epochs.csv")

COMPARISON = Path("metrics/comparison.json")
REPORT = Path("reports/report.html")
HEADLINE = Path("metrics.json")  # the one DVC metrics file: what `dvc metrics show/diff` and `dvc exp show` print


ROWS_DIR = Path("metrics/rows")  # each model's summed test cross-entropy per conversation


def rows_file(stage: str) -> Path:
    """metrics/rows/<stage>.csv: one line per test conversation (see newllm.bootstrap)."""
    return ROWS_DIR / f"{stage}.csv"


def sidecar(ckpt: Path) -> Path:
    """The JSON sidecar next to a checkpoint: models/x.pt -> models/x.json."""
    return ckpt.with_suffix(".json")
