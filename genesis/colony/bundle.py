"""Agent bundles: a champion genome with its trained weights, ready to serve text, in
the Hugging Face layout:

    config.json         the architecture (Hugging Face names) and, under "genesis", the
                        manifest: format, genome, ids, sizes, metrics, lineage, recipe,
                        seed and a SHA-256 per file
    model.safetensors   trained weights (safetensors only: loading never unpickles)
    tokenizer.json      the tokenizer the weights were trained with
    README.md           the model card: YAML metadata, then metrics and lineage for people
    genesis_ulm.py, configuration_genesis.py, modeling_genesis.py,
    tokenizer_config.json, special_tokens_map.json
                        what transformers needs to run it without genesis (`genesis.colony.hub`)
    adapter/            an agent exported from a colony: its low-rank adapter over the
                        weights in model.safetensors, in PEFT's layout (bundles written
                        before kept it in the folder itself, under genesis's names)

`load_agent` checks every hash and that the weights fit the genome and tokenizer, so a
corrupt, truncated or mismatched bundle fails with one clear line. Bundles of format 1
(genome.json, bundle.json, card.md; written before this layout) still load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tokenizers import Tokenizer

from genesis.colony import adapters as lora
from genesis.colony import hub
from genesis.colony.database import MAX_BLOCK_SIZE
from genesis.colony.settings import MAX_RANK
from genesis.core.files import check_inside
from genesis.core.genome import Genome
from genesis.core.recipe import Recipe, load_recipe
from genesis.core.records import training_identity, training_seed
from genesis.errors import GenesisError
from genesis.runs.reader import Run, tokens_of
from genesis.train.model import GPT, GPTConfig, check_size, load_weights

BUNDLE_FORMAT = 2
CONFIG = "config.json"
ADAPTER, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"  # where older bundles kept it
# the first two in every bundle; the others where the bundle has them
HASHED = ("model.safetensors", "tokenizer.json", hub.PEFT_ADAPTER, hub.PEFT_CONFIG, ADAPTER, ADAPTER_CONFIG,
          *hub.CODE, *hub.TOKENIZER_FILES, *hub.GPT2_FILES)
FORMAT_1 = ("bundle.json", ("genome.json", "model.safetensors", "tokenizer.json"))  # (manifest, hashed files)


@dataclass
class Bundle:
    """A loaded agent: genome, model with weights, tokenizer and manifest. `model` is a
    `GPT`, or an `AdaptedModel` (the weights plus `adapter`) for an agent exported from
    a colony with its adapter."""

    path: Path
    genome: Genome
    model: torch.nn.Module
    tokenizer: Tokenizer
    manifest: dict[str, Any]
    adapter: lora.Adapter | None = None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_champions(
    run_path: str | Path,
    top: int = 3,
    out: str | Path | None = None,
    recipe: str | Path | Recipe | None = None,
    data: str | Path | None = None,
    cache_dir: str | Path | None = None,
    gpt2: bool = False,
) -> list[Path]:
    """Write one bundle per champion of a run.

    Weights kept by the run are copied; with `recipe`, each champion is trained again
    under that (longer) recipe instead. A champion whose weights were not kept is
    retrained under the run's own recipe and seed, which reproduces it exactly.

    Args:
        run_path: the run folder.
        top: how many of the best distinct genomes to export: confirmed champions first,
            in their confirmed order (see `Run.champions`).
        out: destination folder; default `genomes/champions/<run-id>/`.
        recipe: optional recipe to train the champions with instead.
        data: the WikiText folder, if it moved since the run.
        cache_dir: tokenizer and token cache.
        gpt2: also write, in `gpt2/`, native `GPT2LMHeadModel` weights and config (no
            remote code) for each champion that is a plain GPT-2 (`hub.gpt2_obstacle`);
            the manifest's "gpt2" says which did, or why not.

    Returns:
        The bundle folders, best first.
    """
    if top < 1:
        raise GenesisError(f"--top must be at least 1, not {top}")
    run = Run.load(run_path)
    config = run.config
    champions = run.champions(top)
    if not champions or champions[0].outcome.status != "ok":
        raise GenesisError(f"{run.path} has no trained genome to export")
    run_recipe = Recipe(**config["recipe"])
    new_recipe = None if recipe is None else (recipe if isinstance(recipe, Recipe) else load_recipe(recipe))
    tokens = tokens_of(config, data, cache_dir)
    out = Path(out) if out is not None else Path("genomes") / "champions" / run.id
    written = []
    for rank, record in enumerate(r for r in champions if r.outcome.status == "ok"):
        identity = training_identity(config, record.genome)
        kept, seed = run.store.weights_path(identity), training_seed(config["seed"], identity)
        if os.path.lexists(kept):  # a link planted in someone else's run folder is refused, even a dangling one
            check_inside(kept, run.path)
        retrained = new_recipe is not None or not kept.exists()
        used = new_recipe or run_recipe
        manifest = {"genome_id": record.genome_id, "block_size": used.seq_len,
                    "lineage": {"run": run.id, "generation": record.generation, "operator": record.operator,
                                "parents": list(record.parents)},
                    "training_seed": seed, "data": config["data"], "recipe": used.to_dict(),
                    "weights": "retrained" if retrained else "kept by the run"}
        place = (partial(_retrain, record, used, tokens, seed) if retrained
                 else partial(_copy_kept, kept, record.outcome.to_dict()))
        written.append(write_bundle(out / f"{rank + 1}-{record.genome_id}", record.genome, tokens.tokenizer,
                                    manifest, place, gpt2=gpt2))
    return written


def _copy_kept(kept: Path, metrics: dict[str, Any], staging: Path) -> dict[str, Any]:
    shutil.copyfile(kept, staging / "model.safetensors")
    return {"metrics": metrics}


def _retrain(record, recipe: Recipe, tokens, seed: int, staging: Path) -> dict[str, Any]:
    from genesis.train.trainer import train

    trained = train(record.genome, recipe, tokens, seed, weights_path=staging / "model.safetensors")
    if trained.status != "ok":
        raise GenesisError(f"retraining {record.genome_id} failed: {trained.reason}")
    return {"metrics": trained.to_dict()}


def write_bundle(folder: Path, genome: Genome, tokenizer: Tokenizer, manifest: dict[str, Any],
                 weights: Callable[[Path], dict[str, Any]], adapter: lora.Adapter | None = None,
                 gpt2: bool = False) -> Path:
    """Write a bundle atomically (a staging folder renamed into place): `weights(staging)`
    puts model.safetensors there and returns more manifest fields (the metrics);
    `adapter`, if given, is stored beside it; with `gpt2`, a plain GPT-2 genome also gets
    its `GPT2LMHeadModel` copy in `gpt2/`. Returns `folder`."""
    _check_replaceable(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        manifest = {**manifest, **weights(staging)}
        tokenizer.save(str(staging / "tokenizer.json"))
        hashed = ["model.safetensors", "tokenizer.json",
                  *hub.write_code_and_tokenizer_config(staging, manifest["block_size"])]
        if adapter is not None:
            (staging / hub.ADAPTER_FOLDER).mkdir()
            (staging / hub.PEFT_ADAPTER).write_bytes(lora.adapter_bytes(hub.to_peft(adapter)))
            config = hub.peft_config(lora.rank_of(adapter), lora.PROJECTIONS, folder.resolve())
            (staging / hub.PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            hashed += [hub.PEFT_ADAPTER, hub.PEFT_CONFIG]
        config = GPTConfig.from_genome(genome, tokenizer.get_vocab_size(), manifest["block_size"])
        obstacle = hub.gpt2_obstacle(config)
        if obstacle is not None:
            manifest["gpt2"] = f"not a plain GPT-2: {obstacle}"
        elif gpt2:
            hashed += _write_gpt2(staging, config, tokenizer)
            manifest["gpt2"] = hub.GPT2_FOLDER
        else:
            manifest["gpt2"] = "a plain GPT-2 (export with --format gpt2 for native weights)"
        manifest = {"format": BUNDLE_FORMAT, "genome": genome.to_dict(), "vocab_size": tokenizer.get_vocab_size(),
                    **manifest, "sha256": {name: sha256_file(staging / name) for name in hashed}}
        (staging / CONFIG).write_text(json.dumps({**hub.hf_config(config, tokenizer), "genesis": manifest},
                                                 indent=2, sort_keys=True) + "\n")
        (staging / "README.md").write_text(_card(genome, manifest))
        staging.chmod(0o755)
        # an old bundle steps aside before the new one takes its name, and goes only once
        # it has: a crash in between leaves it beside, never neither
        replaced = folder.with_name(f".{folder.name}-replaced-{staging.name}") if folder.exists() else None
        if replaced is not None:
            folder.rename(replaced)
        staging.rename(folder)
        if replaced is not None:
            shutil.rmtree(replaced)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_gpt2(staging: Path, config: GPTConfig, tokenizer: Tokenizer) -> list[str]:
    """The `GPT2LMHeadModel` copy of the weights staged in model.safetensors, with its
    config and the tokenizer's files, in `gpt2/`; returns the names to hash."""
    from safetensors.torch import load_file, save_file

    folder = staging / hub.GPT2_FOLDER
    folder.mkdir()
    save_file(hub.gpt2_state(load_file(str(staging / "model.safetensors"))), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(hub.gpt2_config(config, tokenizer), indent=2) + "\n")
    for name in ("tokenizer.json", *hub.TOKENIZER_FILES):
        shutil.copyfile(staging / name, folder / name)
    return list(hub.GPT2_FILES)


def _check_replaceable(folder: Path) -> None:
    """Raise `GenesisError` unless `folder` is free to (re)write: absent, an empty folder,
    or an agent bundle (a user's folder of other files is never replaced)."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise GenesisError(f"{folder} exists and is not a folder; choose another --out")
    if folder.is_dir() and any(folder.iterdir()) and not any(
            (folder / name).is_file() for name in (CONFIG, FORMAT_1[0])):
        raise GenesisError(f"{folder} holds files and is not an agent bundle; choose another --out")


def _card(genome: Genome, manifest: dict[str, Any]) -> str:
    metrics, lineage = manifest["metrics"], manifest.get("lineage", {})
    recipe = manifest.get("recipe")
    agent = lineage.get("agent")
    name = f"genesis agent {agent}" if agent else f"genesis µLM {manifest['genome_id']}"
    lines = ["---", "library_name: genesis", "pipeline_tag: text-generation", "license: mit",
             "tags: [genesis, neuroevolution, tiny-language-model]", "datasets: [wikitext]"]
    if "val_ppl" in metrics:  # the Hub's evaluation results: the validation perplexity it was selected on
        lines += ["model-index:", f"  - name: {name}", "    results:", "      - task: {type: text-generation}",
                  "        dataset: {name: WikiText-2, type: wikitext}", "        metrics:",
                  f"          - {{type: perplexity, value: {metrics['val_ppl']:.3f}, name: validation perplexity}}"]
    lines += ["---", "", f"# {name}", "", f"**Genome:** {genome.describe()}  "]
    if "val_ppl" in metrics:
        lines += [f"**Validation perplexity:** {metrics['val_ppl']:.2f} (loss {metrics['val_loss']:.4f})  ",
                  f"**Parameters:** {metrics['params']:,} ({metrics['non_embedding_params']:,} non-embedding)"]
    if "colony_fitness" in metrics:
        lines += [f"**Colony fitness:** {metrics['colony_fitness']:.4f} (mean log-likelihood of feedback text)  ",
                  f"**Adapter:** rank-{manifest.get('adapter_rank', '?')} LoRA over `model.safetensors`"]
    if lineage.get("run"):
        lines += ["", "## Lineage",
                  f"- run `{lineage['run']}`, generation {lineage['generation']}, made by {lineage['operator']}",
                  f"- parents: {', '.join(lineage['parents']) or 'none (random)'}"]
    if lineage.get("colony"):
        lines += ["", "## Lineage", f"- agent `{lineage['agent']}` of colony `{lineage['colony']}`, "
                  f"parent {lineage['parent'] or 'none (seeded)'}"]
    if recipe:
        lines += ["", "## Training",
                  f"- recipe `{recipe['name']}`: {recipe['steps']} steps x {recipe['batch_size']} x "
                  f"{recipe['seq_len']} tokens, lr {recipe['lr']}",
                  f"- training seed {manifest['training_seed']}; data {manifest['data']['source']}"]
    if manifest.get("gpt2") == hub.GPT2_FOLDER:
        lines += ["", "**Plain GPT-2:** `gpt2/` holds native `GPT2LMHeadModel` weights and config: "
                  "`AutoModelForCausalLM.from_pretrained(\"<this folder>/gpt2\")` needs no remote code."]
    elif manifest.get("gpt2"):
        lines += ["", f"**GPT-2:** {manifest['gpt2']}."]
    lines += ["", "Load with `genesis generate <this folder> \"prompt\"` or `genesis.load_agent(<this folder>)`; "
              "without genesis, with transformers: `AutoModelForCausalLM.from_pretrained(<this folder>, "
              "trust_remote_code=True)` (the modeling code is in the folder)"
              + ("; the agent's adapter with PEFT: `PeftModel.from_pretrained(model, \"<this folder>/adapter\")`."
                 if manifest.get("adapter_rank") else "."), ""]
    return "\n".join(lines)


def load_agent(path: str | Path) -> Bundle:
    """Load and verify an agent bundle (this layout or format 1).

    Raises:
        GenesisError: not a bundle, another format, a file whose hash does not match
            (corrupt or truncated), or weights that do not fit the genome or tokenizer.
    """
    path = Path(path)
    manifest_file, manifest, hashed = _manifest(path)
    for name in hashed:
        if not (path / name).is_file():
            raise GenesisError(f"{path} lacks {name}")
        if sha256_file(path / name) != manifest["sha256"][name]:
            raise GenesisError(f"{path / name} is corrupt: its SHA-256 does not match {manifest_file}")
    try:
        genome = (Genome.from_dict(manifest["genome"]) if manifest_file == CONFIG
                  else Genome.from_json((path / "genome.json").read_text()))
        if genome.id != manifest["genome_id"]:
            raise GenesisError(f"{path}: the genome is {genome.id}, the manifest says {manifest['genome_id']}")
        vocab_size, block_size = manifest["vocab_size"], manifest["block_size"]
    except KeyError as error:
        raise GenesisError(f"{path / manifest_file} lacks a valid {error}") from None
    except GenesisError as error:
        raise GenesisError(f"{path / manifest_file}: {error}") from None
    for name, value in (("vocab_size", vocab_size), ("block_size", block_size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise GenesisError(f"{path / manifest_file}: {name} must be an integer, got {value!r}")
    check_metrics(manifest.get("metrics"), str(path / manifest_file))
    try:
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as error:  # tokenizers raises its own exception types for a bad file
        raise GenesisError(f"{path / 'tokenizer.json'} is not a tokenizer: {error}".splitlines()[0]) from None
    if tokenizer.get_vocab_size() != vocab_size:
        raise GenesisError(f"{path}: the tokenizer has {tokenizer.get_vocab_size()} tokens, the "
                           f"weights were trained with {vocab_size}")
    if not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise GenesisError(f"{path}: its block size {block_size} is not in 1..{MAX_BLOCK_SIZE}")
    check_size(genome, vocab_size, block_size, str(path))
    model = GPT(GPTConfig.from_genome(genome, vocab_size, block_size))
    try:
        load_weights(model, path / "model.safetensors")
    except Exception as error:  # safetensors and torch raise several types for bad files
        first = str(error).strip().splitlines()
        raise GenesisError(f"{path}: the weights do not fit genome {genome.describe()} "
                           f"({first[1].strip() if len(first) > 1 else first[0]})") from None
    model.eval()
    stored = next((name for name in (hub.PEFT_ADAPTER, ADAPTER) if name in hashed), None)
    if stored is None:
        return Bundle(path, genome, model, tokenizer, manifest)
    wrappers = lora.attach(model)
    try:
        adapter = lora.load_adapter((path / stored).read_bytes(), wrappers, MAX_RANK,
                                    rename=hub.from_peft if stored == hub.PEFT_ADAPTER else None)
    except ValueError as error:
        raise GenesisError(f"{path}: {error}") from None
    return Bundle(path, genome, lora.AdaptedModel(model, wrappers, adapter).eval(), tokenizer, manifest, adapter)


def check_metrics(metrics: Any, where: str) -> None:
    """Raise `GenesisError` unless a bundle's metrics are an object whose fitness (the
    validation loss of a trained champion, or the colony fitness of an exported agent) and
    every other number in it are finite: a bundle may come from someone else, and one
    infinite fitness would take over every consensus."""
    if not isinstance(metrics, dict):
        raise GenesisError(f"{where}: metrics must be an object")
    if not ("val_loss" in metrics or "colony_fitness" in metrics):
        raise GenesisError(f"{where}: metrics lack val_loss (or colony_fitness)")
    for name, value in metrics.items():
        if name in ("val_loss", "colony_fitness") or isinstance(value, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise GenesisError(f"{where}: metric {name} must be a finite number, got {value!r}")


def _manifest(path: Path) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """The bundle's manifest file, the manifest, and the files it hashes (a fixed set: a
    bundle may come from someone else, so no name in it leads outside the folder)."""
    manifest_file, hashed = (CONFIG, HASHED) if (path / CONFIG).is_file() else FORMAT_1
    try:
        manifest = json.loads((path / manifest_file).read_text())
    except FileNotFoundError:
        raise GenesisError(f"{path} is not an agent bundle (no {CONFIG})") from None
    except json.JSONDecodeError as error:
        raise GenesisError(f"{path / manifest_file} is corrupt: {error}") from None
    if manifest_file == CONFIG:
        manifest = manifest.get("genesis") if isinstance(manifest, dict) else None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise GenesisError(f"{path / CONFIG} is not a genesis bundle of format {BUNDLE_FORMAT}")
    elif not isinstance(manifest, dict) or manifest.get("format") != 1:
        raise GenesisError(f"{path} is a bundle of format {manifest.get('format') if isinstance(manifest, dict) else '?'}"
                           f"; this genesis reads formats 1 and {BUNDLE_FORMAT}")
    digests = manifest.get("sha256")
    digests = digests if isinstance(digests, dict) else {}
    if any(name not in digests for name in hashed[:2]):
        raise GenesisError(f"{path / manifest_file} lacks the SHA-256 of {', '.join(hashed[:2])}")
    return manifest_file, manifest, tuple(name for name in hashed if name in digests)


load_bundle = load_agent  # the name before bundles took the Hugging Face layout


def same_tokenizer(bundles: Sequence[Bundle]) -> bool:
    """Whether all bundles share one tokenizer (needed to mix their distributions)."""
    return len({b.manifest["sha256"]["tokenizer.json"] for b in bundles}) <= 1
