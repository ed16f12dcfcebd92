"""A bundle scored by lm-evaluation-harness, and the same score computed by genesis.

`write_task` writes a task folder for `lm_eval --include_path`: a YAML task of type
`loglikelihood_rolling` over a JSON-lines file of the split's articles (one document per
WikiText article, as lm-eval's own wikitext task reads them). `score` computes what
lm-eval will report for that task, with genesis's own model: the same documents, the
same tokens (the bundle's tokenizer on each whole article) and the same rolling windows
(lm-eval's `get_rolling_token_windows` with a context of one token, the model's block
size as window, the end-of-text token before each document), so the two agree to
rounding and any gap is a bug on one side.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from genesis.core.files import output_folder, replace_text
from genesis.errors import GenesisError
from genesis.train.data import END_OF_TEXT

def write_task(folder: str | Path, documents: Sequence[str], name: str) -> Path:
    """Write task `name` (YAML and documents) into `folder`; returns the YAML's path."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
        raise GenesisError(f"task name {name!r}: use lower-case letters, digits and _ (starting with a letter)")
    folder = output_folder(Path(folder))
    data = folder / f"{name}.jsonl"
    replace_text(data, "".join(json.dumps({"text": doc}) + "\n" for doc in documents))
    task = folder / f"{name}.yaml"
    replace_text(task, "\n".join([
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        f"  data_files: {{test: {json.dumps(str(data.resolve()))}}}",
        "test_split: test",
        "output_type: loglikelihood_rolling",
        'doc_to_text: ""',
        'doc_to_target: "{{text}}"',
        "metric_list:",
        "  - metric: word_perplexity",
        "  - metric: byte_perplexity",
        "  - metric: bits_per_byte",
        "metadata:",
        "  version: 1.0",
        ""]))
    return task


def rolling_windows(ids: list[int], prefix: int, block: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's rolling windows of one document: (model input, the tokens its last
    positions predict). The first window reads the prefix token and predicts up to `block`
    tokens; each later one predicts the next `block` (or what is left), reading the
    `block` tokens before each prediction's end."""
    first = min(block, len(ids))
    windows = [([prefix] + ids[:first - 1], ids[:first])] if ids else []
    predicted = first
    while predicted < len(ids):
        end = min(len(ids), predicted + block)
        windows.append((ids[end - block - 1:end - 1], ids[predicted:end]))
        predicted = end
    return windows


@torch.no_grad()
def score(model: torch.nn.Module, tokenizer, documents: Sequence[str], block: int) -> dict[str, float]:
    """What lm-eval's `loglikelihood_rolling` metrics give for `documents`: total
    log-likelihood, tokens, words (split on whitespace, as lm-eval counts them) and bytes,
    the mean loss per token, word and byte perplexity and bits per byte."""
    model.eval()
    prefix = tokenizer.token_to_id(END_OF_TEXT)
    log_likelihood, tokens, words, size = 0.0, 0, 0, 0
    for doc in documents:
        ids = tokenizer.encode(doc).ids
        for window, targets in rolling_windows(ids, prefix, block):
            logits, _ = model(torch.tensor([window]))
            log_probs = F.log_softmax(logits[0, -len(targets):].double(), dim=-1)
            log_likelihood += log_probs.gather(1, torch.tensor(targets)[:, None]).sum().item()
        tokens += len(ids)
        words += len(re.split(r"\s+", doc))
        size += len(doc.encode("utf-8"))
    if not tokens:
        raise GenesisError("no text to score")
    return {"log_likelihood": log_likelihood, "tokens": tokens, "words": words, "bytes": size,
            "token_loss": -log_likelihood / tokens, "word_perplexity": math.exp(-log_likelihood / words),
            "byte_perplexity": math.exp(-log_likelihood / size),
            "bits_per_byte": -log_likelihood / size / math.log(2)}
