"""WikiText in, token arrays out.

The text comes from the Hugging Face hub (`wikitext` / `wikitext-2-raw-v1`) or from a
local folder holding `train.txt`, `valid.txt` and `test.txt`. A byte-level BPE tokenizer
is trained on the train split; the tokenizer and the three token arrays are cached on
disk, keyed by the corpus content and the vocabulary size, so a second run reads them
back instead of tokenizing again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from genesis.core.files import replace_text
from genesis.errors import GenesisError
from genesis.train.ngram import baselines as ngram_baselines

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
HUB_DATASET = ("wikitext", "wikitext-2-raw-v1")
HUB_SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
END_OF_TEXT = "<|endoftext|>"
HUB_PROBE_SECONDS = 3.0


@dataclass(frozen=True)
class TokenData:
    """A tokenized corpus: one flat token array per split, and the tokenizer that made it."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    tokenizer: Tokenizer
    source: str  # "hub:wikitext/wikitext-2-raw-v1" or the local folder
    key: str  # content hash of the corpus and vocabulary size; names the cache entry
    # cross-entropy of count-based models of the corpus (`genesis.train.ngram.Baselines`)
    baselines: dict[str, float] | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def split(self, name: str) -> np.ndarray:
        """The token array of split `name` (train, valid or test)."""
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def default_cache_dir() -> Path:
    """`$GENESIS_CACHE`, else `~/.cache/genesis`."""
    return Path(os.environ.get("GENESIS_CACHE", Path.home() / ".cache" / "genesis"))


def load_data(
    data: str | Path | None = None, vocab_size: int = 4096, cache_dir: str | Path | None = None
) -> TokenData:
    """Load WikiText and its tokens, from the cache when they were made before.

    Args:
        data: a local folder with train.txt, valid.txt and test.txt; `None` loads
            WikiText-2 from the hub.
        vocab_size: size of the BPE vocabulary trained on the train split.
        cache_dir: where tokenizers and token arrays are kept; `default_cache_dir()`.

    Raises:
        GenesisError: the folder or one of its splits is missing, or the hub is unreachable.
    """
    texts, source = read_texts(data)
    digest = hashlib.sha256()
    for name in SPLITS:
        digest.update(texts[name].encode())
    key = f"{digest.hexdigest()[:16]}-bpe{vocab_size}"
    entry = Path(cache_dir or default_cache_dir()) / "data" / key
    if not (entry / "meta.json").is_file():
        log.info("tokenizing %s with a new BPE-%d tokenizer", source, vocab_size)
        _build_cache_entry(texts, vocab_size, entry)
    return load_cached(key, cache_dir, source)


def read_texts(data: str | Path | None = None) -> tuple[dict[str, str], str]:
    """The raw text of each split (train, valid, test) and where it came from: a local
    folder, or WikiText-2 from the hub when `data` is None.

    Raises:
        GenesisError: the folder or one of its splits is missing, or the hub is unreachable.
    """
    return _read_folder(Path(data)) if data is not None else _read_hub()


def load_cached(key: str, cache_dir: str | Path | None = None, source: str = "") -> TokenData:
    """Load a corpus already tokenized by `load_data`, by its key (for worker processes).

    Raises:
        GenesisError: no cache entry with that key.
    """
    entry = Path(cache_dir or default_cache_dir()) / "data" / key
    if not (entry / "meta.json").is_file():
        raise GenesisError(f"no tokenized corpus {key} in {entry.parent}")
    arrays = {name: np.load(entry / f"{name}.npy") for name in SPLITS}
    tokenizer = Tokenizer.from_file(str(entry / "tokenizer.json"))
    meta = json.loads((entry / "meta.json").read_text())
    if "baselines" not in meta:  # an entry made before baselines were kept: counted once, then kept
        meta["baselines"] = ngram_baselines(arrays["train"], arrays["valid"], arrays["test"],
                                            tokenizer.get_vocab_size()).to_dict()
        replace_text(entry / "meta.json", json.dumps(meta))
    return TokenData(**arrays, tokenizer=tokenizer, source=source or key, key=key, baselines=meta["baselines"])


def check_fits(tokens: TokenData, seq_len: int, batch_size: int) -> None:
    """Check that every split holds enough tokens for the recipe's windows: the train split
    a batch of distinct windows, validation and test one window each.

    Raises:
        GenesisError: a split is too short, naming it and how many tokens it needs.
    """
    needs = {"train": seq_len + 1 + batch_size, "valid": seq_len + 1, "test": seq_len + 1}
    for name, least in needs.items():
        have = int(tokens.split(name).size)
        if have < least:
            raise GenesisError(f"the {name} split of {tokens.source} has {have} tokens; windows of "
                               f"{seq_len} tokens need at least {least}")


def train_tokenizer(text: str, vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style) on `text`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer)
    return tokenizer


def encode(tokenizer: Tokenizer, text: str) -> np.ndarray:
    """Token ids of `text` as a flat uint16 array (line by line, in parallel)."""
    lines = text.splitlines(keepends=True)
    encodings = tokenizer.encode_batch(lines)
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64)
    return ids.astype(np.uint16)


def _build_cache_entry(texts: dict[str, str], vocab_size: int, entry: Path) -> None:
    # Written into a temporary folder beside the entry and renamed into place, so that a
    # crash mid-way or a concurrent run never leaves a half-written cache entry behind.
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        tokenizer = train_tokenizer(texts["train"], vocab_size)
        tokenizer.save(str(staging / "tokenizer.json"))
        arrays = {}
        for name in SPLITS:
            arrays[name] = encode(tokenizer, texts[name])
            np.save(staging / f"{name}.npy", arrays[name])
        reference = ngram_baselines(arrays["train"], arrays["valid"], arrays["test"], tokenizer.get_vocab_size())
        (staging / "meta.json").write_text(json.dumps({
            "vocab_size": vocab_size, "tokens": {name: int(ids.size) for name, ids in arrays.items()},
            "baselines": reference.to_dict()}))
        try:
            os.replace(staging, entry)
        except OSError:
            if not (entry / "meta.json").is_file():  # not a concurrent writer that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_folder(folder: Path) -> tuple[dict[str, str], str]:
    if not folder.is_dir():
        raise GenesisError(f"data folder {folder} does not exist")
    texts = {}
    for name in SPLITS:
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise GenesisError(f"data folder {folder} has no {name}.txt (needs {', '.join(s + '.txt' for s in SPLITS)})")
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise GenesisError(f"{path} is not UTF-8 text (byte {error.start} cannot be decoded)") from None
        if not texts[name].strip():
            raise GenesisError(f"{path} is empty")
    return texts, str(folder.resolve())


def _read_hub() -> tuple[dict[str, str], str]:
    # `datasets` retries an unreachable hub for tens of seconds; a short TCP probe fails
    # fast instead. With HF offline mode set, the local hub cache is used as it is.
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    if not offline and not hub_reachable():
        raise GenesisError(
            "cannot reach the Hugging Face hub to download WikiText-2; "
            "pass --data PATH, a folder holding train.txt, valid.txt and test.txt"
        )
    import datasets

    try:
        dataset = datasets.load_dataset(*HUB_DATASET)
    except Exception as error:  # datasets raises many types for network and cache problems
        raise GenesisError(
            f"could not load {'/'.join(HUB_DATASET)} from the hub ({type(error).__name__}: "
            f"{error}); pass --data PATH, a folder holding train.txt, valid.txt and test.txt"
        ) from None
    texts = {name: "".join(dataset[HUB_SPLIT_NAMES[name]]["text"]) for name in SPLITS}
    return texts, "hub:" + "/".join(HUB_DATASET)


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub (`$HF_ENDPOINT`) opens within `timeout` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
