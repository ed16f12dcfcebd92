"""The µLM built from a genome: every activation runs, the parameter count is exact."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genesis.core.genome import ACTIVATIONS, NORMS, POSITIONS, PRECISIONS, QK_NORMS, Genome
from genesis.train.model import GPT, GPTConfig, count_parameters


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_and_backward_for_every_activation(activation):
    torch.manual_seed(0)
    genome = Genome(n_layer=2, n_head=2, d_model=32, activation=activation, sigma=0.01)
    model = GPT(GPTConfig.from_genome(genome, vocab_size=300, block_size=16))
    idx = torch.randint(0, 300, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 300)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def _losses_while_training(model, idx, steps, after_backward=lambda: None) -> list[float]:
    """Train `model` to predict `idx` itself for a few AdamW steps; the loss of each step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        _, loss = model(idx, idx)
        optimizer.zero_grad()
        loss.backward()
        after_backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("ffn_mult", [2, 3])
@pytest.mark.parametrize("position", ["learned", "rotary"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_every_optional_trait_builds_a_model_that_trains(norm, ffn_mult, position, dropout):
    torch.manual_seed(0)
    genome = Genome(2, 2, 32, "swiglu", 0.01, norm=norm, ffn_mult=ffn_mult, position=position,
                    dropout=dropout)
    model = GPT(GPTConfig.from_genome(genome, vocab_size=300, block_size=16))
    losses = _losses_while_training(model, torch.randint(0, 300, (3, 16)), steps=5)
    assert losses[-1] < losses[0]
    assert isinstance(model.ln_f, torch.nn.RMSNorm if norm == "rmsnorm" else torch.nn.LayerNorm)


@pytest.mark.parametrize("genome", [
    Genome(1, 1, 32, "relu", 0.01),
    Genome(3, 4, 128, "swiglu", 0.01),
    Genome(2, 2, 96, "gelu", 0.01),
    Genome(2, 2, 64, "swiglu", 0.01, norm="rmsnorm", ffn_mult=3),
    Genome(1, 1, 96, "relu2", 0.01, ffn_mult=2),
    Genome(2, 2, 64, "gelu", 0.01, position="rotary"),
    Genome(2, 4, 64, "silu", 0.01, qk_norm="on"),
    Genome(1, 2, 64, "relu", 0.01, norm="rmsnorm", qk_norm="on"),
])
def test_parameter_count_is_exact(genome):
    model = GPT(GPTConfig.from_genome(genome, vocab_size=4096, block_size=64))
    manual = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert model.num_parameters() == manual == count_parameters(genome, 4096, 64)


@pytest.mark.parametrize("norm", NORMS)
def test_qk_norm_normalizes_every_heads_queries_and_keys(norm):
    genome = Genome(1, 4, 64, "relu", 0.01, norm=norm, qk_norm="on")
    attention = GPT(GPTConfig.from_genome(genome, 300, 16)).blocks[0].attn
    seen = {}
    attention.q_norm.register_forward_hook(lambda module, args, out: seen.update(q=out))
    with torch.no_grad():
        attention.qkv.weight.mul_(50.0)  # huge projections: unnormalized logits would explode
        attention(torch.randn(2, 8, 64))
    rms = seen["q"].pow(2).mean(-1).sqrt()  # (B, nh, T): one norm per head and position
    assert seen["q"].shape == (2, 4, 8, 16)
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-2)


def test_embeddings_are_tied():
    model = GPT(GPTConfig.from_genome(Genome(1, 1, 32, "relu", 0.01), 300, 16))
    assert model.head.weight is model.tok_emb.weight


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_attention_is_causal(position):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_genome(Genome(2, 2, 32, "gelu", 0.01, position=position), 300, 16)).eval()
    idx = torch.randint(0, 300, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 300
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_rotary_positions_depend_on_relative_offsets_only():
    from genesis.train.ulm import Rotary

    rotary = Rotary(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, d_model=16))
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    scores = []
    for shift in (0, 3):  # the same query/key pair two positions apart, at two places
        queries = torch.zeros(1, 1, 8, 16)
        keys = torch.zeros(1, 1, 8, 16)
        queries[..., shift + 2, :], keys[..., shift, :] = q[..., 0, :], k[..., 0, :]
        rq, rk = rotary(queries), rotary(keys)
        scores.append((rq[..., shift + 2, :] * rk[..., shift, :]).sum().item())
    assert scores[0] == pytest.approx(scores[1], rel=1e-5)
    assert "cos" not in GPT(GPTConfig(10, 8, 1, 1, 16, position="rotary")).state_dict()


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_genome(Genome(1, 1, 32, "gelu", 0.01, dropout=0.5), 300, 16))
    idx = torch.randint(0, 300, (2, 16))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


def test_ternary_weights_take_three_values_in_the_forward_pass_and_still_learn():
    from genesis.train.ulm import TernaryLinear

    torch.manual_seed(0)
    genome = Genome(2, 2, 32, "gelu", 0.01, weight_precision="ternary")
    model = GPT(GPTConfig.from_genome(genome, vocab_size=300, block_size=16))
    layers = [m for m in model.modules() if isinstance(m, TernaryLinear)]
    assert len(layers) == 2 * 4  # qkv, proj, up, down in each of two blocks
    for layer in layers:
        values = torch.unique(layer.ternary_weight().detach())
        assert len(values) == 3 and values[1] == 0 and values[0] == -values[2]
    gradients = []
    losses = _losses_while_training(model, torch.randint(0, 300, (4, 16)), steps=8,
                                    after_backward=lambda: gradients.append(layers[0].weight.grad.abs().sum()))
    assert all(g > 0 for g in gradients)  # the straight-through estimator reaches latent weights
    assert losses[-1] < losses[0]
    full = GPT(GPTConfig.from_genome(Genome(2, 2, 32, "gelu", 0.01), 300, 16))
    assert model.size_bytes() < full.size_bytes() == 4 * full.num_parameters()


def test_the_largest_genome_of_a_space_has_the_most_parameters():
    from genesis.core.space import load_search_space
    from genesis.runs.sweep import architectures
    from genesis.train.model import largest_genome

    space = load_search_space()
    most = max(count_parameters(g, 4096, 64) for g in architectures(space))
    assert count_parameters(largest_genome(space.domains), 4096, 64) == most


@pytest.mark.parametrize("position", ["learned", "rotary"])
@pytest.mark.parametrize("qk_norm", QK_NORMS)
def test_incremental_decoding_with_a_cache_equals_reading_the_whole_context(position, qk_norm):
    from genesis.train.model import GPT, GPTConfig

    genome = Genome(n_layer=2, n_head=2, d_model=32, activation="gelu", sigma=0.01, position=position,
                    qk_norm=qk_norm)
    model = GPT(GPTConfig.from_genome(genome, vocab_size=50, block_size=16)).eval()
    tokens = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(0))
    cache = [{} for _ in model.blocks]
    with torch.no_grad():
        model(tokens[:, :6], cache=cache)  # the prompt fills the cache
        for t in range(6, 10):
            step, _ = model(tokens[:, t:t + 1], cache=cache, last_only=True)
            whole, _ = model(tokens[:, :t + 1])
            assert torch.allclose(step[:, -1], whole[:, -1], atol=1e-5)


@settings(max_examples=12, deadline=None)
@given(activation=st.sampled_from(ACTIVATIONS), norm=st.sampled_from(NORMS), position=st.sampled_from(POSITIONS),
       precision=st.sampled_from(PRECISIONS), qk_norm=st.sampled_from(QK_NORMS), n_layer=st.integers(1, 2),
       seed=st.integers(0, 2**31))
def test_weights_round_trip_through_bytes_and_load_with_safetensors_own_loader(
        tmp_path_factory, activation, norm, position, precision, qk_norm, n_layer, seed):
    import safetensors.torch

    from genesis.train.model import load_weights_bytes, weights_bytes

    torch.manual_seed(seed)
    genome = Genome(n_layer, 2, 32, activation, 0.01, norm=norm, position=position, weight_precision=precision,
                    qk_norm=qk_norm)
    config = GPTConfig.from_genome(genome, vocab_size=50, block_size=16)
    model, again, theirs = GPT(config), GPT(config), GPT(config)
    data = weights_bytes(model, {"version": "3"})
    load_weights_bytes(again, data)
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    path.write_bytes(data)
    safetensors.torch.load_model(theirs, str(path))  # the library's own loader reads what we write
    with safetensors.safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["version"] == "3"
    for loaded in (again, theirs):
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
        assert loaded.head.weight is loaded.tok_emb.weight  # still tied
    with pytest.raises(RuntimeError, match="missing tensors"):
        load_weights_bytes(GPT(GPTConfig.from_genome(Genome(n_layer + 1, 2, 32, activation, 0.01, norm=norm,
                                                               position=position, weight_precision=precision),
                                                        vocab_size=50, block_size=16)), data)
