"""Brief training of one µLM under a recipe, and its evaluation.

`train` never raises for a bad genome: a diverging loss, an out-of-memory error or any
other exception becomes an `Outcome` with that status, so one bad genome cannot stop a
run. The trainer knows nothing of evolution; an optional `on_step` callback lets
callers watch it.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from genesis.core.genome import Genome
from genesis.core.recipe import Recipe
from genesis.core.records import CURVE_POINTS, Outcome
from genesis.train.data import TokenData
from genesis.train.model import GPT, GPTConfig, save_weights
from genesis.train.optim import make_optimizers, set_learning_rates

log = logging.getLogger(__name__)

# How often the step loop reports the loss to an `on_step` observer; each report is a
# host sync, so without an observer the loop never waits for the device.
REPORT_EVERY = 25


def train(
    genome: Genome,
    recipe: Recipe,
    data: TokenData,
    seed: int,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
    weights_path: Path | None = None,
    give_up_above: Sequence[float | None] = (),
    measure_test: bool = False,
) -> Outcome:
    """Build the genome's model, train it for `recipe.steps` and measure it.

    Args:
        genome: the architecture to train.
        recipe: budget, batch shape, optimizer and evaluation settings.
        data: the tokenized corpus.
        seed: seeds weight init and batch sampling; same seed, same outcome on CPU.
        device: torch device string.
        on_step: called as `on_step(step, loss)` every few steps.
        weights_path: where to save the trained weights (safetensors) if training
            succeeds; nothing is saved without it.
        give_up_above: early stopping, one bound (or None) per learning-curve point
            but the last: training stops after point k when the lowest point so far is
            above bound k. The outcome then records the step and the tokens it reached;
            it is measured on the validation batches as usual.
        measure_test: also measure the loss on the same number of fixed windows of the
            held-out test split (`Outcome.test_loss`).

    Returns:
        An `Outcome`; its status says whether training succeeded.
    """
    started = time.perf_counter()
    try:
        return _train(genome, recipe, data, seed, device, on_step, started, weights_path, give_up_above,
                      measure_test)
    except torch.OutOfMemoryError as error:
        return _failure("oom", error, recipe, started)
    except Exception as error:  # a bad genome must not stop the run; the record keeps why
        log.exception("training %s failed", genome.id)
        return _failure("error", error, recipe, started)


def _failure(status: str, error: BaseException, recipe: Recipe, started: float) -> Outcome:
    reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return Outcome(status=status, reason=reason, wall_s=time.perf_counter() - started)


def uses_bf16(recipe: Recipe, device: str) -> bool:
    """Whether training runs under bf16 autocast: asked for, or "auto" on fast-bf16 hardware.

    "auto" means a CUDA GPU with bf16, or a CPU with AMX tiles. A CPU with only AVX-512
    bf16 runs bf16 matmuls slower than fp32 (measured: 168 vs 326 GFLOP/s, see
    benchmarks/README.md), so it stays in fp32.
    """
    if recipe.precision == "auto":
        if device.startswith("cuda"):
            return torch.cuda.is_bf16_supported()
        return torch.cpu._is_amx_tile_supported()
    return recipe.precision == "bf16"


def curve_parts(steps: int) -> list[tuple[int, int]]:
    """The (start, end) steps of the `CURVE_POINTS` equal parts of a step budget; none
    for budgets too short to have that many."""
    if steps < CURVE_POINTS:
        return []
    ends = [round(steps * (k + 1) / CURVE_POINTS) for k in range(CURVE_POINTS)]
    return list(zip([0, *ends[:-1]], ends))


def _train(genome, recipe, data, seed, device, on_step, started, weights_path, give_up_above,
           measure_test) -> Outcome:
    torch.manual_seed(seed)
    config = GPTConfig.from_genome(genome, data.vocab_size, recipe.seq_len)
    model = GPT(config).to(device)
    if recipe.init_scale != 1.0:
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() >= 2:
                    parameter.mul_(recipe.init_scale)
    optimizers = make_optimizers(model, recipe, config.d_model)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                              enabled=uses_bf16(recipe, device))
    step_model = torch.compile(model) if recipe.compile else model
    train_tokens = torch.from_numpy(data.train.astype(np.int64)).to(device)
    generator = batch_generator(recipe, seed)
    parts = curve_parts(recipe.steps)
    # part end step -> (part start, early-stopping bound or None); only these steps wait
    # for the device: to give up a hopeless curve, and to stop at a non-finite loss
    bounds = list(give_up_above) + [None] * len(parts)
    checks = {end: (start, bound) for (start, end), bound in zip(parts, bounds)}
    lowest_part, stopped_at, diverged = math.inf, None, False

    losses = torch.zeros(recipe.steps, device=device)
    train_started = time.perf_counter()
    model.train()
    for step in range(recipe.steps):
        set_learning_rates(optimizers, step, recipe)
        x, y = _random_batch(train_tokens, recipe.batch_size, recipe.seq_len, generator)
        with autocast:
            _, loss = step_model(x, y)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip or math.inf)
        if step == 0:
            init_grad_norm = norm.detach()
        for optimizer in optimizers:
            optimizer.step()
        losses[step] = loss.detach()
        if on_step is not None and ((step + 1) % REPORT_EVERY == 0 or step + 1 == recipe.steps):
            on_step(step + 1, losses[step].item())
        if step + 1 in checks:
            start, bound = checks[step + 1]
            part = losses[start:step + 1].mean().item()
            if not math.isfinite(part):  # no point training on: the loss is gone
                diverged = True
                break
            lowest_part = min(lowest_part, part)
            if bound is not None and lowest_part > bound:
                stopped_at = step + 1
                break
    steps_run = step + 1 if diverged else (stopped_at or recipe.steps)
    tokens = steps_run * recipe.batch_size * recipe.seq_len
    losses = losses[:steps_run]
    finite = torch.isfinite(losses)
    train_seconds = time.perf_counter() - train_started
    if not finite.all():
        first = int((~finite).nonzero()[0])
        return Outcome(status="diverged",
                       reason=f"loss became {losses[first].item()} at step {first + 1}",
                       tokens=tokens, wall_s=time.perf_counter() - started)

    with autocast:
        val_loss = held_out_loss(model, data.valid, recipe, device)
        test_loss = held_out_loss(model, data.test, recipe, device) if measure_test else None
        latency_ms = inference_latency_ms(model, recipe.seq_len, device)
    tail = max(1, steps_run // 10)
    params = model.num_parameters()
    if not math.isfinite(val_loss):
        return Outcome(status="diverged", reason=f"validation loss is {val_loss}",
                       params=params, tokens=tokens,
                       wall_s=time.perf_counter() - started)
    if weights_path is not None:
        save_weights(model, weights_path)
    reached = [(start, end) for start, end in parts if end <= steps_run]
    return Outcome(
        status="ok",
        val_loss=val_loss,
        val_ppl=math.exp(val_loss),
        train_loss=losses[-tail:].mean().item(),
        params=params,
        non_embedding_params=model.num_parameters(non_embedding=True),
        init_grad_norm=init_grad_norm.item(),
        tokens=tokens,
        tokens_per_s=tokens / train_seconds,
        latency_ms=latency_ms,
        size_bytes=model.size_bytes(),
        wall_s=time.perf_counter() - started,
        curve=torch.stack([losses[a:b].mean() for a, b in reached]).tolist() if reached else [],
        stopped_at=stopped_at,
        test_loss=test_loss,
    )


@torch.no_grad()
def held_out_loss(model: GPT, tokens: np.ndarray, recipe: Recipe, device: str = "cpu") -> float:
    """Mean loss over the recipe's fixed validation windows.

    The windows are evenly spaced over the split and the same for every genome, so
    validation losses compare genomes and not luck in batch sampling.
    """
    model.eval()
    count = recipe.eval_batches * recipe.eval_batch_size
    span = recipe.seq_len + 1
    starts = torch.linspace(0, len(tokens) - span, count).long()
    windows = torch.from_numpy(tokens.astype(np.int64))[starts[:, None] + torch.arange(span)]
    total = torch.zeros((), device=device)
    for batch in windows.to(device).split(recipe.eval_batch_size):
        _, loss = model(batch[:, :-1], batch[:, 1:])
        total += loss.float()
    return (total / recipe.eval_batches).item()


@torch.no_grad()
def inference_latency_ms(model: GPT, seq_len: int, device: str = "cpu", repeats: int = 5) -> float:
    """Median wall time of one forward pass over a single sequence of `seq_len` tokens."""
    model.eval()
    tokens = torch.zeros((1, seq_len), dtype=torch.long, device=device)
    model(tokens)  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        model(tokens)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[len(times) // 2]


COMMON_DATA_SEED = 0


def batch_generator(recipe, seed: int) -> torch.Generator:
    """The generator that draws a training's batches: from its seed, or under
    `data_order = "common"` the same for every training."""
    return torch.Generator(device="cpu").manual_seed(COMMON_DATA_SEED if recipe.data_order == "common" else seed)


def _random_batch(tokens: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator):
    starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=generator)
    window = tokens[starts.to(tokens.device)[:, None] + torch.arange(seq_len + 1, device=tokens.device)]
    return window[:, :-1], window[:, 1:]  # (B, T) inputs and next-token targets
