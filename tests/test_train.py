"""Real training on WikiText: loss falls, seeds reproduce, divergence is an outcome."""

from __future__ import annotations

import dataclasses
import math

from genesis.core.genome import Genome
from genesis.core.recipe import Recipe
from genesis.train.trainer import train
from genesis.train.optim import scheduled_lr

GENOME = Genome(n_layer=1, n_head=2, d_model=64, activation="gelu", sigma=0.01)


def test_training_on_wikitext_lowers_the_loss(tokens):
    recipe = Recipe(steps=40, batch_size=8, seq_len=32, warmup_steps=4,
                    eval_batches=2, eval_batch_size=8)
    reported = []
    outcome = train(GENOME, recipe, tokens, seed=0, on_step=lambda s, loss: reported.append(s))
    shorter = train(GENOME, dataclasses.replace(recipe, steps=5), tokens, seed=0)
    assert outcome.status == "ok" and reported == [25, 40]
    initial = math.log(tokens.vocab_size)  # the loss of a uniform guess, where training starts
    assert outcome.val_loss < initial - 1.0
    assert outcome.val_loss < shorter.val_loss - 0.5
    assert outcome.val_ppl == math.exp(outcome.val_loss)
    assert outcome.tokens == 40 * 8 * 32 and outcome.tokens_per_s > 0
    assert outcome.init_grad_norm > 0 and outcome.non_embedding_params < outcome.params


def test_same_seed_same_outcome_different_seed_different(tokens, tiny_recipe):
    a = train(GENOME, tiny_recipe, tokens, seed=3)
    b = train(GENOME, tiny_recipe, tokens, seed=3)
    c = train(GENOME, tiny_recipe, tokens, seed=4)
    assert a.val_loss == b.val_loss and a.train_loss == b.train_loss
    assert a.val_loss != c.val_loss


def test_a_common_data_order_gives_every_seed_the_same_batches_and_init_scale_scales_the_start(tokens, tiny_recipe):
    import torch

    from genesis.train.trainer import batch_generator

    def draw(recipe, seed):
        return torch.randint(0, 1000, (8,), generator=batch_generator(recipe, seed)).tolist()

    common = dataclasses.replace(tiny_recipe, data_order="common")
    assert draw(common, 3) == draw(common, 4) and draw(tiny_recipe, 3) != draw(tiny_recipe, 4)
    a, b = (train(GENOME, common, tokens, seed=s) for s in (3, 4))
    assert a.val_loss != b.val_loss  # seeds still differ in their initialization
    small = train(GENOME, dataclasses.replace(tiny_recipe, init_scale=0.25), tokens, seed=3)
    assert small.init_grad_norm != train(GENOME, tiny_recipe, tokens, seed=3).init_grad_norm


def test_a_diverging_training_is_an_outcome_not_a_crash(tokens, tiny_recipe):
    recipe = dataclasses.replace(tiny_recipe, steps=25, lr=1e8, min_lr=1e8, grad_clip=0.0)
    outcome = train(GENOME, recipe, tokens, seed=0)
    assert outcome.status == "diverged"
    assert math.isinf(outcome.fitness) and "nan" in outcome.reason.lower()


def test_a_failing_genome_is_recorded_as_error(tokens, tiny_recipe):
    broken = Genome(n_layer=1, n_head=3, d_model=64, activation="gelu", sigma=0.01)  # 64 % 3
    outcome = train(broken, tiny_recipe, tokens, seed=0)
    assert outcome.status == "error" and outcome.reason


def test_learning_rate_warms_up_then_decays_to_the_floor():
    recipe = Recipe(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    assert scheduled_lr(0, recipe) == 1e-4
    assert scheduled_lr(9, recipe) == 1e-3
    rates = [scheduled_lr(s, recipe) for s in range(10, recipe.steps)]  # the steps that run
    assert rates == sorted(rates, reverse=True) and rates[0] == 1e-3
    # the last step that runs is within 0.1% of the floor's distance, above it
    assert 0 < rates[-1] - 1e-4 < 1e-3 * (1e-3 - 1e-4)


def test_early_stopping_gives_up_at_the_first_point_above_its_bound(tokens):
    from genesis.core.records import TIMING_FIELDS
    from genesis.train.trainer import curve_parts

    recipe = Recipe(steps=16, batch_size=4, seq_len=32, warmup_steps=2, eval_batches=2, eval_batch_size=4)
    full = train(GENOME, recipe, tokens, seed=1)
    assert len(full.curve) == 8 and full.stopped_at is None
    assert full.curve[-1] < full.curve[0]  # a learning curve: the loss falls
    # bounds the curve never exceeds change nothing at all
    unbounded = train(GENOME, recipe, tokens, seed=1, give_up_above=[None, *full.curve[1:-1]])
    same = lambda o: {k: v for k, v in o.to_dict().items() if k not in TIMING_FIELDS}  # noqa: E731
    assert same(unbounded) == same(full)
    # a bound below the lowest point reached so far at curve point 3 stops it there
    bounds = [None, math.inf, math.inf, min(full.curve[:4]) - 1e-3, math.inf, math.inf, math.inf]
    stopped = train(GENOME, recipe, tokens, seed=1, give_up_above=bounds)
    end = curve_parts(16)[3][1]
    assert stopped.status == "ok" and stopped.stopped_at == end == 8
    assert stopped.tokens == end * 4 * 32 and stopped.curve == full.curve[:4]
    assert math.isfinite(stopped.val_loss) and stopped.val_loss > full.val_loss


def test_training_stops_at_the_first_non_finite_part_of_its_curve(tokens, tiny_recipe):
    recipe = dataclasses.replace(tiny_recipe, steps=80, lr=1e8, min_lr=1e8, grad_clip=0.0)
    steps_seen = []
    outcome = train(GENOME, recipe, tokens, seed=0, on_step=lambda s, loss: steps_seen.append(s))
    per_step = recipe.batch_size * recipe.seq_len
    assert outcome.status == "diverged" and "at step" in outcome.reason
    assert outcome.tokens % (10 * per_step) == 0 and outcome.tokens < 80 * per_step  # an eighth's end
    assert max(steps_seen, default=0) < 80
