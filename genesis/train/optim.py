"""Optimizers and learning rates by parameter role.

Every parameter of a `GPT` has one role:

- ``embedding``: the token (and position) tables; the output head is tied to the token table.
- ``matrix``: the blocks' weight matrices (attention and feed-forward projections).
- ``vector``: biases and norm scales.

A recipe picks an optimizer for the matrices (AdamW, or Muon: momentum orthogonalized by
Newton-Schulz, as in the nanoGPT speedrun) and, optionally, a width-aware learning rate
for AdamW matrices (µP's rule for Adam: a hidden matrix's rate shrinks as `base / width`,
so one peak rate suits every width). Embeddings and vectors always use AdamW at the
recipe's `lr`, as modded-nanogpt keeps its embedding and head on Adam.

Each parameter group carries its own peak rate (`peak_lr`); the schedule is a multiplier
of it, so per-group rates survive every step (rewriting every group with one rate would
undo width scaling, as mup warns).
"""

from __future__ import annotations

import math

import torch

from genesis.core.recipe import Recipe

ROLES = ("embedding", "matrix", "vector")


def parameter_roles(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """The model's parameters grouped by role (each parameter once; tied ones once)."""
    roles: dict[str, list[torch.nn.Parameter]] = {role: [] for role in ROLES}
    for name, param in model.named_parameters():
        if "emb" in name:
            roles["embedding"].append(param)
        elif param.dim() >= 2:
            roles["matrix"].append(param)
        else:
            roles["vector"].append(param)
    return roles


def matrix_lr(recipe: Recipe, width: int) -> float:
    """Peak learning rate of the blocks' matrices under AdamW: `recipe.lr`, or with
    `lr_base_width` set, `recipe.lr * lr_base_width / width` (µP for Adam)."""
    return recipe.lr * recipe.lr_base_width / width if recipe.lr_base_width else recipe.lr


def make_optimizers(model: torch.nn.Module, recipe: Recipe, width: int) -> list[torch.optim.Optimizer]:
    """The optimizers one training steps: AdamW for everything, or AdamW for embeddings
    and vectors plus Muon for the matrices. Weight decay applies to matrices only."""
    roles = parameter_roles(model)
    adam_groups = [{"params": roles["embedding"] + roles["vector"], "weight_decay": 0.0, "peak_lr": recipe.lr}]
    optimizers: list[torch.optim.Optimizer] = []
    if recipe.optimizer == "muon":
        # match_rms_adamw scales Muon's update to AdamW's size, so rates compare across
        # optimizers and the rule carries over to every matrix shape
        muon = torch.optim.Muon(roles["matrix"], lr=recipe.muon_lr, weight_decay=recipe.weight_decay,
                                adjust_lr_fn="match_rms_adamw")
        for group in muon.param_groups:
            group["peak_lr"] = recipe.muon_lr
        optimizers.append(muon)
    else:
        adam_groups.insert(0, {"params": roles["matrix"], "weight_decay": recipe.weight_decay,
                               "peak_lr": matrix_lr(recipe, width)})
    adam = torch.optim.AdamW([g for g in adam_groups if g["params"]], lr=recipe.lr,
                             betas=(recipe.beta1, recipe.beta2), fused=recipe.fused_optimizer or None)
    return [adam, *optimizers]


def set_learning_rates(optimizers: list[torch.optim.Optimizer], step: int, recipe: Recipe) -> None:
    """Put every group at its peak rate times the schedule's multiplier for `step`."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(step, recipe, group["peak_lr"])


def scheduled_lr(step: int, recipe: Recipe, peak: float | None = None) -> float:
    """Linear warm-up to `peak` (default `recipe.lr`), then cosine decay toward the floor
    `recipe.min_lr * peak / recipe.lr`, reached one step after the last (the last step
    runs just above it)."""
    peak = recipe.lr if peak is None else peak
    floor = recipe.min_lr if peak == recipe.lr else recipe.min_lr * peak / recipe.lr
    if step < recipe.warmup_steps:
        return peak * (step + 1) / recipe.warmup_steps
    span = max(1, recipe.steps - recipe.warmup_steps)
    progress = (step - recipe.warmup_steps) / span
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def check_available(recipe: Recipe) -> str | None:
    """Why this torch cannot run the recipe's optimizer, or None when it can."""
    if recipe.optimizer == "muon" and not hasattr(torch.optim, "Muon"):
        return f"optimizer 'muon' needs torch.optim.Muon (torch 2.9 or newer; this is {torch.__version__})"
    return None
