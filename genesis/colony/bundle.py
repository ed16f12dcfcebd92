"""Agent bundles: a champion genome with its trained weights, ready to serve text.

A bundle is a folder:

    genome.json         the genome's traits
    model.safetensors   trained weights (safetensors only: loading never unpickles)
    tokenizer.json      the tokenizer the weights were trained with
    card.md             metrics, lineage, run, recipe and seed, for people
    bundle.json         the manifest: format, ids, sizes, metrics and a SHA-256 per file

`load_bundle` checks every hash and that the weights fit the genome and tokenizer, so a
corrupt, truncated or mismatched bundle fails with one clear line.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tokenizers import Tokenizer

from genesis.core.genome import Genome
from genesis.core.recipe import Recipe, load_recipe
from genesis.core.records import Record, training_identity, training_seed
from genesis.errors import GenesisError
from genesis.runs.reader import Run, tokens_of
from genesis.train.model import GPT, GPTConfig, check_size, load_weights

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
HASHED_FILES = ("genome.json", "model.safetensors", "tokenizer.json")


@dataclass
class Bundle:
    """A loaded agent: genome, model with weights, tokenizer and manifest."""

    path: Path
    genome: Genome
    model: GPT
    tokenizer: Tokenizer
    manifest: dict[str, Any]


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

    Returns:
        The bundle folders, best first.
    """
    from genesis.train.trainer import train

    run = Run.load(run_path)
    config = run.config
    champions = run.champions(top)
    if not champions or champions[0].outcome.status != "ok":
        raise GenesisError(f"{run.path} has no trained genome to export")
    run_recipe = Recipe(**config["recipe"])
    new_recipe = None if recipe is None else (recipe if isinstance(recipe, Recipe) else load_recipe(recipe))
    tokens = tokens_of(config, data, cache_dir)
    out = Path(out) if out is not None else Path("genomes") / "champions" / run.id
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, record in enumerate(r for r in champions if r.outcome.status == "ok"):
        folder = out / f"{rank + 1}-{record.genome_id}"
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=out))
        try:
            used_recipe, outcome = run_recipe, record.outcome
            identity = training_identity(config, record.genome)
            kept = run.store.weights_path(identity)
            seed = training_seed(config["seed"], identity)
            retrained = new_recipe is not None or not kept.exists()
            if retrained:
                used_recipe = new_recipe or run_recipe
                outcome = train(record.genome, used_recipe, tokens, seed,
                                weights_path=staging / "model.safetensors")
                if outcome.status != "ok":
                    raise GenesisError(f"retraining {record.genome_id} failed: {outcome.reason}")
            else:
                shutil.copyfile(kept, staging / "model.safetensors")
            _write_bundle(staging, record, outcome, used_recipe, tokens.tokenizer, run, seed,
                          "retrained" if retrained else "kept by the run")
            if folder.exists():
                shutil.rmtree(folder)
            staging.chmod(0o755)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        written.append(folder)
    return written


def _write_bundle(folder: Path, record: Record, outcome, recipe: Recipe, tokenizer: Tokenizer,
                  run: Run, seed: int, weights: str) -> None:
    (folder / "genome.json").write_text(record.genome.to_json() + "\n")
    tokenizer.save(str(folder / "tokenizer.json"))
    metrics = outcome.to_dict()
    manifest = {
        "format": BUNDLE_FORMAT,
        "genome_id": record.genome_id,
        "vocab_size": tokenizer.get_vocab_size(),
        "block_size": recipe.seq_len,
        "metrics": metrics,
        "lineage": {"run": run.id, "generation": record.generation, "operator": record.operator,
                    "parents": list(record.parents)},
        "recipe": recipe.to_dict(),
        "training_seed": seed,
        "weights": weights,  # "kept by the run", or "retrained" (missing, or another recipe)
        "data": run.config["data"],
        "sha256": {name: sha256_file(folder / name) for name in HASHED_FILES},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (folder / "card.md").write_text(_card(record, manifest))


def _card(record: Record, manifest: dict[str, Any]) -> str:
    metrics, lineage, recipe = manifest["metrics"], manifest["lineage"], manifest["recipe"]
    return "\n".join([
        f"# µLM agent {record.genome_id}",
        "",
        f"**Genome:** {record.genome.describe()}  ",
        f"**Validation perplexity:** {metrics['val_ppl']:.2f} (loss {metrics['val_loss']:.4f})  ",
        f"**Parameters:** {metrics['params']:,} ({metrics['non_embedding_params']:,} non-embedding)",
        "",
        "## Lineage",
        f"- run `{lineage['run']}`, generation {lineage['generation']}, made by {lineage['operator']}",
        f"- parents: {', '.join(lineage['parents']) or 'none (random)'}",
        "",
        "## Training",
        f"- recipe `{recipe['name']}`: {recipe['steps']} steps x {recipe['batch_size']} x "
        f"{recipe['seq_len']} tokens, lr {recipe['lr']}",
        f"- training seed {manifest['training_seed']}; data {manifest['data']['source']}",
        "",
        "Load with `genesis generate <this folder> \"prompt\"` or `genesis.colony.bundle.load_bundle`.",
        "",
    ])


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify an agent bundle.

    Raises:
        GenesisError: not a bundle, another format, a file whose hash does not match
            (corrupt or truncated), or weights that do not fit the genome or tokenizer.
    """
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise GenesisError(f"{path} is not an agent bundle (no {MANIFEST})") from None
    except json.JSONDecodeError as error:
        raise GenesisError(f"{path / MANIFEST} is corrupt: {error}") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise GenesisError(f"{path} is a bundle of format {manifest.get('format')}; "
                           f"this genesis reads format {BUNDLE_FORMAT}")
    for name in HASHED_FILES:
        if not (path / name).is_file():
            raise GenesisError(f"{path} lacks {name}")
        if sha256_file(path / name) != manifest["sha256"].get(name):
            raise GenesisError(f"{path / name} is corrupt: its SHA-256 does not match {MANIFEST}")
    genome = Genome.from_json((path / "genome.json").read_text())
    if genome.id != manifest["genome_id"]:
        raise GenesisError(f"{path}: genome.json is genome {genome.id}, the manifest says "
                           f"{manifest['genome_id']}")
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    if tokenizer.get_vocab_size() != manifest["vocab_size"]:
        raise GenesisError(f"{path}: the tokenizer has {tokenizer.get_vocab_size()} tokens, the "
                           f"weights were trained with {manifest['vocab_size']}")
    check_size(genome, manifest["vocab_size"], manifest["block_size"], str(path))
    model = GPT(GPTConfig.from_genome(genome, manifest["vocab_size"], manifest["block_size"]))
    try:
        load_weights(model, path / "model.safetensors")
    except Exception as error:  # safetensors and torch raise several types for bad files
        first = str(error).strip().splitlines()
        raise GenesisError(f"{path}: the weights do not fit genome {genome.describe()} "
                           f"({first[1].strip() if len(first) > 1 else first[0]})") from None
    model.eval()
    return Bundle(path, genome, model, tokenizer, manifest)


def same_tokenizer(bundles: Sequence[Bundle]) -> bool:
    """Whether all bundles share one tokenizer (needed to mix their distributions)."""
    return len({b.manifest["sha256"]["tokenizer.json"] for b in bundles}) <= 1
