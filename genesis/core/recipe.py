"""Training recipes: the fixed, recorded budget every genome is trained under.

Recipes are TOML files; the built-in ones are the project's `trainers/`, and
`load_recipe("quick")` reads `trainers/quick.toml`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genesis.core.config import check_keys, check_type, read_toml, resolve_data_file
from genesis.errors import GenesisError

MAX_VOCAB_SIZE = 65536  # ids 0..65535: what the uint16 token arrays hold
DEFAULT_RECIPE = "quick"
PRECISIONS = ("fp32", "bf16", "auto")
OPTIMIZERS = ("adamw", "muon")  # for the blocks' matrices; embeddings and vectors always use AdamW
DATA_ORDERS = ("seeded", "common")


@dataclass(frozen=True)
class Recipe:
    """How one genome is trained and evaluated.

    The budget is a number of optimizer steps, so every genome sees the same tokens
    (batch_size x seq_len x steps) and results are reproducible.
    """

    name: str = "quick"
    steps: int = 100  # optimizer steps (the budget)
    batch_size: int = 16  # sequences per step
    seq_len: int = 64  # tokens per sequence (the model's context)
    lr: float = 3e-3  # peak learning rate
    min_lr: float = 3e-4  # floor of the cosine decay
    warmup_steps: int = 10  # linear warm-up steps
    weight_decay: float = 0.1  # AdamW decoupled weight decay on matrices
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_batches: int = 8  # fixed validation batches that give the fitness
    eval_batch_size: int = 32  # sequences per validation batch
    vocab_size: int = 4096  # BPE vocabulary trained on the train split
    precision: str = "auto"  # fp32, bf16 (autocast), or auto (bf16 on CUDA and AMX CPUs)
    fused_optimizer: bool = True  # one fused AdamW kernel instead of a loop over tensors
    compile: bool = False  # torch.compile the model (pays off only on long budgets)
    optimizer: str = "adamw"  # for the blocks' matrices: adamw, or muon (see genesis/train/optim.py)
    muon_lr: float = 0.01  # Muon's peak rate, on AdamW's scale (match_rms_adamw)
    lr_base_width: int = 0  # 0: one rate; else AdamW matrices take lr * lr_base_width / d_model (µP)
    # seeded: the training seed draws the batches too; common: every training reads the same
    # batches (common random numbers: architectures compared on the same data, seeds differ in init)
    data_order: str = "seeded"
    init_scale: float = 1.0  # the initial weight matrices (embeddings included) scaled by this

    @property
    def tokens(self) -> int:
        """Training tokens one evaluation consumes."""
        return self.steps * self.batch_size * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a JSON-ready dict."""
        return dataclasses.asdict(self)


def load_recipe(name_or_path: str | Path = DEFAULT_RECIPE) -> Recipe:
    """Load a recipe from a TOML file, or a built-in one by name (the project's `trainers/`).

    Every key must be a `Recipe` field; values must have the field's type and be positive
    (learning rates and `weight_decay`/`grad_clip` may be zero).

    Raises:
        GenesisError: a missing or malformed file, an unknown key or a bad value.
    """
    path = resolve_data_file(name_or_path, "trainers")
    data = read_toml(path)
    data.setdefault("name", Path(path).stem)
    return parse_recipe(data, str(path))


def parse_recipe(data: dict[str, Any], path: str) -> Recipe:
    """A `Recipe` from its fields (a TOML file's tables, a run's config.json), checked as
    `load_recipe` describes; `path` names the source in errors.

    Raises:
        GenesisError: an unknown key or a bad value.
    """
    if not isinstance(data, dict):
        raise GenesisError(f"{path}: a recipe must be a table of settings")
    data = dict(data)
    fields = {field.name: field for field in dataclasses.fields(Recipe)}
    check_keys(data, set(fields), path)
    for key, value in data.items():
        kind = fields[key].type
        check_type(f"{path}: {key}", value, kind)  # finite, if a number
        if kind == "float":
            value = data[key] = float(value)
        if kind in ("int", "float") and value < 0:
            raise GenesisError(f"{path}: {key} must not be negative, got {value}")
    recipe = Recipe(**data)
    for key in ("steps", "batch_size", "seq_len", "eval_batches", "eval_batch_size"):
        if getattr(recipe, key) < 1:
            raise GenesisError(f"{path}: {key} must be at least 1")
    if recipe.precision not in PRECISIONS:
        raise GenesisError(f"{path}: precision must be one of {', '.join(PRECISIONS)}")
    if recipe.optimizer not in OPTIMIZERS:
        raise GenesisError(f"{path}: optimizer must be one of {', '.join(OPTIMIZERS)}")
    if recipe.data_order not in DATA_ORDERS:
        raise GenesisError(f"{path}: data_order must be one of {', '.join(DATA_ORDERS)}")
    if not 0 < recipe.init_scale <= 10:
        raise GenesisError(f"{path}: init_scale must be in (0, 10]")
    if recipe.vocab_size < 256 + 2:
        raise GenesisError(f"{path}: vocab_size must exceed the 256 byte tokens")
    if recipe.vocab_size > MAX_VOCAB_SIZE:
        raise GenesisError(f"{path}: vocab_size must be at most {MAX_VOCAB_SIZE} (token ids are "
                           "stored as 16-bit integers)")
    return recipe
