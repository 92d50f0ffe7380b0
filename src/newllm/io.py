"""Atomic file writes (temp file in the same directory + fsync + rename) and safe loads."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from newllm.errors import CheckpointError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | Path, write) -> None:
    """``write(f)`` fills a temp file ``.<name>.<random>.tmp`` next to ``path``, which replaces
    ``path`` only once complete and fsynced: a reader (or a kill -9) never sees a partial file,
    and no reader opens the temp names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give outputs the usual mode
        except OSError:  # some FUSE mounts (e.g. Google Drive on Colab) refuse chmod: keep 0600
            pass
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` atomically (e.g. a rolling checkpoint to a Drive mirror)."""
    with open(src, "rb") as s:
        _atomic_write(dst, lambda f: shutil.copyfileobj(s, f, 1 << 20))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, sort_keys: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` streamed into the temp file: no in-memory copy of the serialized bytes (an
    in-memory buffer plus its ``getvalue()`` would cost twice the file's size in RAM)."""
    import torch  # here, not at the top: the fetch stage uses this module without torch

    _atomic_write(path, lambda f: torch.save(obj, f))


def torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """Load with ``weights_only=True``; any failure becomes a CheckpointError naming the file."""
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} is missing: run the stage that produces it (dvc repro)")
    try:
        with warnings.catch_warnings():  # torch warns about legacy files before failing on them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage, or a pickled object weights_only refuses
        text = str(e)
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
        if found:
            raise CheckpointError(
                f"{what} {path} holds objects other than tensors and plain data ({found.group(1)}); "
                f"refusing to unpickle it (weights_only=True), nothing in it was run. Re-create it "
                f"with this project's stages.") from None
        if isinstance(e, pickle.UnpicklingError) or "WeightsUnpickler" in text:
            msg = "not a PyTorch checkpoint"
        else:
            first = text.splitlines()[0].split(". ")[0] if text else ""
            msg = f"{type(e).__name__}: {first}" if first else type(e).__name__
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({msg}); delete it and re-run "
                              f"the stage that produces it") from None


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} is missing: run the stage that produces it (dvc repro)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what} {path} is not valid JSON ({e}); re-run the stage that writes it") from None


def csv_text(rows: list[dict]) -> str:
    """Rows of equal keys as CSV text (header from the first row); NaN becomes an empty cell."""
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and v != v else v) for k, v in r.items()})
    return buf.getvalue()


def state_dict_digest(state: dict) -> str:
    """Hash of tensor contents (order-independent of pickling details)."""
    import torch

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        h.update(k.encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(t).encode())
    return h.hexdigest()
