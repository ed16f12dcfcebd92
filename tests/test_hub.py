"""Bundles that the Hugging Face ecosystem runs without genesis: transformers (the code in
the bundle, every trait), its tokenizer and pipeline, and PEFT for an agent's adapter.

Each check runs in a subprocess where importing genesis fails (tests/outside/hf_run.py)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import missing

from genesis.colony import hub
from genesis.colony.bundle import load_agent, write_bundle
from genesis.core.genome import Genome
from genesis.train.model import GPT, GPTConfig, save_weights

OUTSIDE = Path(__file__).resolve().parent / "outside" / "hf_run.py"
BLOCK = 32
TRAITS = [  # together: every activation, norm, position, precision, qk norm; ffn_mult and dropout
    Genome(2, 2, 64, "swiglu", 0.01, norm="rmsnorm", position="rotary", weight_precision="ternary"),
    Genome(1, 4, 64, "relu2", 0.01, ffn_mult=2, dropout=0.1),
    Genome(2, 1, 32, "gelu", 0.01),
    Genome(1, 2, 32, "silu", 0.01, norm="rmsnorm", ffn_mult=3, qk_norm="on"),
    Genome(1, 1, 32, "relu", 0.01, position="rotary", weight_precision="ternary"),
]


def _require(name: str, extra: str) -> None:
    try:
        __import__(name)
    except ImportError:
        missing(f"{name} is not installed (pip install -e '.[{extra}]')")


@pytest.fixture(scope="module", autouse=True)
def ecosystem():
    _require("transformers", "hf")
    _require("peft", "hf")


def outside(plans: list[dict], folder: Path) -> list[dict]:
    """What transformers and PEFT compute for each check, in a process without genesis."""
    plan = folder / "plan.json"
    plan.write_text(json.dumps(plans))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "HF_HOME": str(folder / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    answers = folder / "answers.json"
    done = subprocess.run([sys.executable, "-I", str(OUTSIDE), str(plan), str(answers)], cwd=folder, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    *answers, imported = json.loads(answers.read_text())
    assert imported == {"genesis_imported": False}
    return answers


def _random_bundle(genome: Genome, tokenizer, folder: Path, seed: int) -> tuple[Path, GPT]:
    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_genome(genome, tokenizer.get_vocab_size(), BLOCK))
    with torch.no_grad():  # away from the initialization, so the norms and biases matter too
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)

    return write_bundle(folder, genome, tokenizer, {"genome_id": genome.id, "block_size": BLOCK},
                        _placing(model)), model.eval()


def _placing(model: GPT):
    """What `write_bundle` calls to put `model`'s weights into the bundle."""

    def place(staging: Path) -> dict:
        save_weights(model, staging / "model.safetensors")
        return {"metrics": {"val_loss": 5.0}}

    return place


def test_the_code_in_a_bundle_imports_only_torch_transformers_and_its_siblings():
    import ast

    package = Path(hub.__file__).resolve().parent.parent
    allowed = {"__future__", "math", "dataclasses", "torch", "transformers"}
    for path in [package / "train" / "ulm.py", *(package / "colony" / "hf").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= allowed, path
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 1 or node.module.split(".")[0] in allowed, (path, node.module)


@torch.no_grad()
def _greedy(model, ids: list[int], count: int) -> list[int]:
    context = list(ids)
    for _ in range(count):
        logits, _ = model(torch.tensor([context[-BLOCK:]]))
        context.append(int(logits[0, -1].argmax()))
    return context[len(ids):]


def test_every_trait_runs_in_transformers_with_genesis_s_logits_and_greedy_tokens(tmp_path, tokens):
    ids = tokens.tokenizer.encode("The history of the city is long and it was built in the year of").ids[:28]
    made = [_random_bundle(g, tokens.tokenizer, tmp_path / f"b{i}", i) for i, g in enumerate(TRAITS)]
    answers = outside([{"bundle": str(folder), "ids": ids, "generate": 8} for folder, _ in made], tmp_path)
    for (folder, model), answer, genome in zip(made, answers, TRAITS):
        assert answer["class"] == "GenesisForCausalLM"
        expected = model(torch.tensor([ids]))[0][0]
        difference = (torch.tensor(answer["logits"]) - expected).abs().max().item()
        assert difference <= 1e-5, f"{genome.describe()}: logits differ by {difference}"
        # 28 + 8 tokens: generation crosses the block size of 32, and both crop alike
        assert answer["generated"] == _greedy(model, ids, 8), genome.describe()
        assert (folder / hub.NETWORK).read_bytes() == (Path(hub.__file__).parent.parent / "train" / "ulm.py").read_bytes()
        assert load_agent(folder).manifest["sha256"][hub.NETWORK]  # the code is hashed with the weights


def test_a_trained_champion_loads_with_its_tokenizer_and_pipeline(tmp_path, bundles):
    champion = load_agent(bundles[0])
    text = "The game was"
    [answer] = outside([{"bundle": str(bundles[0]), "encode": text, "pipeline": text}], tmp_path)
    assert answer["encoded"] == champion.tokenizer.encode(text).ids and answer["eos"] == "<|endoftext|>"
    greedy = _greedy(champion.model, champion.tokenizer.encode(text).ids, 5)
    assert answer["pipeline"] == text + champion.tokenizer.decode(greedy)


def test_an_adapter_agent_loads_in_peft_and_predicts_as_in_its_colony(tmp_path, bundles):
    from genesis.colony.colony import Colony
    from genesis.colony.export import export_agent
    from genesis.colony.settings import ColonySettings

    colony = Colony.seed(tmp_path / "colony", bundles, ColonySettings(agent_weights="adapter", adapt_steps=2,
                                                                      learning_rate=1e-2))
    colony.teach("The history of the city", " is long and old")  # the adapter learned: not its first draw
    agent = colony.agents()[0]
    folder = export_agent(colony, agent.id, tmp_path / "agent")
    config = json.loads((folder / hub.PEFT_CONFIG).read_text())
    assert config["r"] == config["lora_alpha"] == colony.settings.adapter_rank and config["peft_type"] == "LORA"
    ids = [5, 17, 300, 2000, 41]
    [answer] = outside([{"bundle": str(folder), "adapter": str(folder / hub.ADAPTER_FOLDER), "ids": ids}],
                       tmp_path)
    assert answer["class"].startswith("Peft")
    with torch.no_grad():
        expected = colony.model(agent)(torch.tensor([ids]))[0][0]
    assert (torch.tensor(answer["logits"]) - expected).abs().max().item() <= 1e-5
    # and genesis reads PEFT's layout back
    assert torch.allclose(load_agent(folder).model(torch.tensor([ids]))[0][0], expected, atol=1e-6)


def test_lm_eval_scores_a_bundle_as_genesis_does(tmp_path, bundles, data_folder):
    _require("lm_eval", "eval")
    from typer.testing import CliRunner

    from genesis.cli import app

    tasks = tmp_path / "tasks"
    result = CliRunner().invoke(app, ["eval-task", str(bundles[0]), "--out", str(tasks), "--articles", "2",
                                      "--data", str(data_folder), "--json"])
    assert result.exit_code == 0, result.output
    mine = json.loads(result.output)
    arguments = ["--model", "hf", "--model_args", f"pretrained={bundles[0]},trust_remote_code=True",
                 "--tasks", "genesis_wikitext", "--include_path", str(tasks), "--device", "cpu", "--batch_size", "1"]
    assert mine["lm_eval"] == " ".join(["lm_eval", *arguments])  # the command the CLI tells a user to run
    [theirs] = outside([{"lm_eval": arguments, "output": str(tmp_path / "lm-eval")}], tmp_path)
    theirs = theirs["genesis_wikitext"]
    assert theirs["word_perplexity,none"] == pytest.approx(mine["word_perplexity"], rel=1e-5)
    assert theirs["bits_per_byte,none"] == pytest.approx(mine["bits_per_byte"], rel=1e-5)
    assert mine["documents"] == 2 and mine["tokens"] > 1000


def test_a_plain_gpt2_genome_exports_native_gpt2_weights_loadable_without_remote_code(tmp_path, tokens):
    plain = [g for g in TRAITS if hub.gpt2_obstacle(GPTConfig.from_genome(g, 4096, BLOCK)) is None]
    assert [g.activation for g in plain] == ["relu2", "gelu"]  # and the others say why not
    normalized = dataclasses.replace(plain[1], qk_norm="on")
    assert hub.gpt2_obstacle(GPTConfig.from_genome(normalized, 4096, BLOCK)) == "normalized queries and keys"
    ids = tokens.tokenizer.encode("The history of the city is long").ids
    made = []
    for index, genome in enumerate(plain):
        torch.manual_seed(index)
        model = GPT(GPTConfig.from_genome(genome, tokens.vocab_size, BLOCK)).eval()
        folder = write_bundle(tmp_path / f"g{index}", genome, tokens.tokenizer,
                              {"genome_id": genome.id, "block_size": BLOCK}, _placing(model), gpt2=True)
        made.append((folder, model))
    answers = outside([{"bundle": str(folder / hub.GPT2_FOLDER), "ids": ids, "no_remote_code": True}
                       for folder, _ in made], tmp_path)
    for (folder, model), answer in zip(made, answers):
        assert answer["class"] == "GPT2LMHeadModel"
        assert (torch.tensor(answer["logits"]) - model(torch.tensor([ids]))[0][0]).abs().max().item() <= 1e-5
        assert load_agent(folder).manifest["gpt2"] == "gpt2"
    rotary = write_bundle(tmp_path / "rotary", TRAITS[0], tokens.tokenizer,
                          {"genome_id": TRAITS[0].id, "block_size": BLOCK},
                          _placing(GPT(GPTConfig.from_genome(TRAITS[0], tokens.vocab_size, BLOCK))), gpt2=True)
    assert not (rotary / hub.GPT2_FOLDER).exists()
    assert load_agent(rotary).manifest["gpt2"] == "not a plain GPT-2: rotary positions"


def test_cli_export_format_gpt2_says_which_champions_are_plain_gpt2(run, tmp_path):
    from typer.testing import CliRunner

    from genesis.cli import app

    result = CliRunner().invoke(app, ["export", str(run.path), "--top", "2", "--out", str(tmp_path / "out"),
                                      "--format", "gpt2", "--json"])
    assert result.exit_code == 0, result.output
    for entry in json.loads(result.output):
        plain = hub.gpt2_obstacle(GPTConfig.from_genome(load_agent(entry["bundle"]).genome, 4096, BLOCK)) is None
        assert entry["gpt2"] == ("gpt2" if plain else "not a plain GPT-2: the gated swiglu feed-forward")
        assert (Path(entry["bundle"]) / hub.GPT2_FOLDER).is_dir() == plain
    assert CliRunner().invoke(app, ["export", str(run.path), "--format", "onnx"]).exit_code == 2
