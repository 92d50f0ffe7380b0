"""What identifies the data a run reads, without reading it into memory (no torch).

``fingerprint(cfg)`` is a small dict that changes exactly when the data does:

- ``jsonl``: the file's resolved path, size and sha256 (streamed in 1 MB blocks);
- ``chatterbot``: the sha256 over the bundled corpus files (a new package version with other
  dialogs changes it);
- ``ultrachat``: the Hub dataset and its splits (streamed from the Hub at fetch time; a change
  on the Hub is not seen here).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from newllm.config import DataConfig
from newllm.errors import DataError


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def chatterbot_dir() -> Path:
    """The English dialogs of the installed chatterbot-corpus package."""
    import chatterbot_corpus

    return Path(chatterbot_corpus.__file__).parent / "data" / "english"


def fingerprint(cfg: DataConfig) -> dict:
    if cfg.source == "jsonl":
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise DataError(f"data.path {cfg.path!r} is not a file (resolved: {path.resolve()}); give a JSONL or "
                            f"Parquet file in the ultrachat_200k row schema")
        return {"what": f"file {cfg.path}", "path": str(path.resolve()), "bytes": path.stat().st_size,
                "sha256": _sha256([path])}
    if cfg.source == "chatterbot":
        files = sorted(chatterbot_dir().glob("*.yml"))
        return {"what": "the bundled chatterbot-corpus (English)", "files": len(files), "sha256": _sha256(files)}
    return {"what": f"the Hub dataset {cfg.hub_dataset}", "dataset": cfg.hub_dataset,
            "splits": [cfg.train_split, cfg.val_split]}
