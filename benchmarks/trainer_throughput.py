"""Trainer throughput: the genesis trainer against transformers' GPT2LMHeadModel.

For a grid of genomes, one evaluation of the default recipe (model build, training and
validation, any compile time included) is timed for each trainer option of genesis and
for GPT2LMHeadModel at the same width, depth, heads, batch, sequence length, optimizer,
schedule and validation, alternating the two in one run. Reported per genome:

- end-to-end tokens/s (training tokens over the whole evaluation's wall time);
- model FLOPs utilization (MFU): model FLOPs per token x training tokens/s over the
  matmul peak measured in the same run (the bf16 peak where bf16 is on);
- the speed-up of genesis over GPT2LMHeadModel at the same settings (precision, fused
  optimizer, parameter groups), and of each side's best option over the other's;
- medians over alternating rounds, with the range of wall times in the JSON.

    pip install -e ".[bench]"
    python benchmarks/trainer_throughput.py --data /path/to/wikitext-2

Writes benchmarks/results/trainer_throughput.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
from common import (
    benchmark_parser,
    machine,
    matmul_peak,
    rendered_only,
    table,
    update_readme,
    write_results,
)

from genesis.core.genome import Genome
from genesis.core.recipe import Recipe, load_recipe
from genesis.train.data import load_data
from genesis.train.model import GPT, GPTConfig
from genesis.train.trainer import _random_batch, train, uses_bf16
from genesis.train.optim import scheduled_lr

GENOMES = [  # small to large within the default space, and one wider for the MFU target
    Genome(1, 1, 64, "relu", 0.01),
    Genome(2, 2, 128, "gelu", 0.01),
    Genome(3, 2, 160, "gelu", 0.01),
    Genome(4, 4, 192, "gelu", 0.01),
    Genome(4, 4, 256, "gelu", 0.01),
]
# Every option is set explicitly (the quick recipe's own defaults must not leak into a
# column), and the GPT-2 baseline runs the same options with the same optimizer: AdamW,
# weight decay on matrices only, fused or not as the column says.
OPTIONS = {  # name -> recipe settings, the same for both trainers
    "fp32": {"precision": "fp32", "fused_optimizer": False, "compile": False},
    "fp32+fused": {"precision": "fp32", "fused_optimizer": True, "compile": False},
    "bf16": {"precision": "bf16", "fused_optimizer": False, "compile": False},
    "bf16+fused": {"precision": "bf16", "fused_optimizer": True, "compile": False},
}
GENESIS_ONLY = {"bf16+fused+compile": {"precision": "bf16", "fused_optimizer": True, "compile": True}}


def model_flops_per_token(genome: Genome, vocab: int, seq_len: int) -> float:
    """Training FLOPs per token: 6·(non-embedding params + LM head) + 12·L·d·T attention."""
    model = GPT(GPTConfig.from_genome(genome, vocab, seq_len))
    matmul_params = model.num_parameters(non_embedding=True) + genome.d_model * vocab
    return 6 * matmul_params + 12 * genome.n_layer * genome.d_model * seq_len


def run_genesis(genome: Genome, recipe: Recipe, tokens) -> dict:
    started = time.perf_counter()
    outcome = train(genome, recipe, tokens, seed=1)
    wall = time.perf_counter() - started
    assert outcome.status == "ok", outcome.reason
    return {"wall_s": wall, "train_tokens_per_s": outcome.tokens_per_s,
            "val_loss": outcome.val_loss, "bf16": uses_bf16(recipe, "cpu")}


def run_gpt2(genome: Genome, recipe: Recipe, tokens) -> dict:
    """The same evaluation with Hugging Face's GPT2LMHeadModel: build, train, validate,
    under the recipe's precision and optimizer settings."""
    from transformers import GPT2Config, GPT2LMHeadModel

    bf16 = recipe.precision == "bf16"
    started = time.perf_counter()
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=tokens.vocab_size, n_positions=recipe.seq_len, n_embd=genome.d_model,
                        n_layer=genome.n_layer, n_head=genome.n_head, activation_function=genome.activation,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    # genesis' parameter groups: decay on matrices, not on biases, norms or embeddings
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wte" not in n and "wpe" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                                  fused=recipe.fused_optimizer or None)
    data = torch.from_numpy(tokens.train.astype("int64"))
    generator = torch.Generator().manual_seed(1)
    train_started = time.perf_counter()
    model.train()
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(step, recipe)
        x, _ = _random_batch(data, recipe.batch_size, recipe.seq_len, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss  # GPT-2 shifts the labels itself
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
    loss.item()
    train_seconds = time.perf_counter() - train_started
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        windows = torch.linspace(0, len(tokens.valid) - recipe.seq_len - 1,
                                 recipe.eval_batches * recipe.eval_batch_size).long()
        batch = torch.from_numpy(tokens.valid.astype("int64"))[windows[:, None] + torch.arange(recipe.seq_len)]
        for part in batch.split(recipe.eval_batch_size):
            model(input_ids=part, labels=part)
    return {"wall_s": time.perf_counter() - started, "train_tokens_per_s": recipe.tokens / train_seconds,
            "bf16": bf16}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per genome")
    parser.add_argument("--genomes", type=int, default=len(GENOMES), help="use the first N genomes")
    args = parser.parse_args()
    if rendered_only(parser, args, "trainer_throughput", render):
        return

    recipe = load_recipe("quick")
    tokens = load_data(args.data, recipe.vocab_size)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    warm_up = dataclasses.replace(recipe, steps=5)  # first-call costs must not bias the first row
    run_genesis(GENOMES[0], warm_up, tokens)
    run_gpt2(GENOMES[0], warm_up, tokens)
    rows = []
    for genome in GENOMES[: args.genomes]:
        flops = model_flops_per_token(genome, tokens.vocab_size, recipe.seq_len)
        runs: dict[str, list[dict]] = {}
        for _ in range(args.rounds):  # alternate: each option on both trainers, round after round
            for name, settings in OPTIONS.items():
                configured = dataclasses.replace(recipe, **settings)
                runs.setdefault(f"genesis {name}", []).append(run_genesis(genome, configured, tokens))
                runs.setdefault(f"gpt2 {name}", []).append(run_gpt2(genome, configured, tokens))
            for name, settings in GENESIS_ONLY.items():
                runs.setdefault(f"genesis {name}", []).append(
                    run_genesis(genome, dataclasses.replace(recipe, **settings), tokens))
        measured = {}
        for name, samples in runs.items():
            walls = [s["wall_s"] for s in samples]
            wall = statistics.median(walls)
            train_rate = statistics.median(s["train_tokens_per_s"] for s in samples)
            peak = peaks["bf16" if samples[0]["bf16"] else "fp32"]
            measured[name] = {"end_to_end_tokens_per_s": recipe.tokens / wall, "wall_s": wall,
                              "wall_s_range": [min(walls), max(walls)],
                              "train_tokens_per_s": train_rate, "mfu": flops * train_rate / (peak * 1e9),
                              "val_loss": samples[0].get("val_loss")}
        matched = {name: measured[f"genesis {name}"]["end_to_end_tokens_per_s"]
                   / measured[f"gpt2 {name}"]["end_to_end_tokens_per_s"] for name in OPTIONS}
        best_genesis = max((k for k in measured if k.startswith("genesis")),
                           key=lambda k: measured[k]["end_to_end_tokens_per_s"])
        best_gpt2 = max((k for k in measured if k.startswith("gpt2")),
                        key=lambda k: measured[k]["end_to_end_tokens_per_s"])
        rows.append({"genome": genome.describe(), "d_model": genome.d_model, "flops_per_token": flops,
                     "measured": measured, "best_genesis": best_genesis, "best_gpt2": best_gpt2,
                     "speedup_same_settings": matched,
                     "speedup": measured[best_genesis]["end_to_end_tokens_per_s"]
                     / measured[best_gpt2]["end_to_end_tokens_per_s"]})
        print(f"{genome.describe()}: best {best_genesis} vs {best_gpt2}: x{rows[-1]['speedup']:.2f}")

    results = {"machine": machine(), "recipe": recipe.to_dict(), "peaks_gflops": peaks,
               "rounds": args.rounds, "genomes": rows}
    path = write_results("trainer_throughput", results)
    update_readme("trainer_throughput", render(results))
    print(f"wrote {path}")


def render(results: dict) -> str:
    """The README table of a results dict."""
    peaks = results["peaks_gflops"]
    options = list(results["genomes"][0]["measured"])
    header = (["genome"] + [f"{o} tok/s (MFU)" for o in options]
              + ["speed-up (best vs best)", "speed-up at the same settings"])
    rows = []
    for row in results["genomes"]:
        cells = [row["genome"]]
        for option in options:
            m = row["measured"][option]
            mark = "**" if option in (row["best_genesis"], row["best_gpt2"]) else ""
            cells.append(f"{mark}{m['end_to_end_tokens_per_s']:,.0f} ({100 * m['mfu']:.0f}%){mark}")
        cells.append(f"x{row['speedup']:.2f}")
        same = row.get("speedup_same_settings", {})
        cells.append(", ".join(f"{k} x{v:.2f}" for k, v in same.items()) or "-")
        rows.append(cells)
    m = results["machine"]
    mid = [r for r in results["genomes"] if 128 <= r["d_model"] <= 192]
    wide = [r for r in results["genomes"] if r["d_model"] >= 256]
    speedups = [r["speedup"] for r in mid]
    mfus = [r["measured"][r["best_genesis"]]["mfu"] for r in wide]
    targets = table(["target", "measured", "met"], [
        ["genesis >= 1.5x GPT2LMHeadModel end-to-end tokens/s, mid-size genomes (d 128-192)",
         ", ".join(f"x{v:.2f}" for v in speedups), "yes" if speedups and min(speedups) >= 1.5 else "**no**"],
        ["MFU >= 50% of the measured peak for d_model >= 256 (best genesis option)",
         ", ".join(f"{100 * v:.0f}%" for v in mfus), "yes" if mfus and min(mfus) >= 0.5 else "**no**"],
    ])
    return "\n".join([
        f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}, "
        f"{m['torch_threads']} threads); matmul peak {peaks['fp32']:.0f} GFLOP/s fp32, "
        f"{peaks['bf16']:.0f} GFLOP/s bf16. One evaluation of the `quick` recipe "
        f"({results['recipe']['steps']} steps x {results['recipe']['batch_size']} x "
        f"{results['recipe']['seq_len']} tokens), median of {results['rounds']} alternating round(s). "
        "End-to-end tokens/s include model build, any compile and validation; MFU uses the "
        "training steps' throughput. Bold: each side's best.",
        "",
        table(header, rows),
        "",
        targets,
    ])


if __name__ == "__main__":
    main()
