"""An agent leaves its colony as a bundle (`genesis.colony.bundle`'s Hugging Face layout):
its seed bundle's weights with its own adapter beside them, or its whole model."""

from __future__ import annotations

from pathlib import Path

from genesis.colony import adapters as lora
from genesis.colony.bundle import write_bundle
from genesis.colony.colony import Colony
from genesis.errors import NotFound


def export_agent(colony: Colony, agent_id: str, folder: str | Path) -> Path:
    """Write agent `agent_id` of `colony` as a bundle in `folder`; it loads with
    `genesis.load_agent`, generates text and seeds new colonies.

    Raises:
        NotFound: no such agent.
    """
    agent = next((a for a in colony.agents(alive_only=False) if a.id == agent_id), None)
    if agent is None:
        raise NotFound(f"{colony.location} has no agent {agent_id!r}")
    weights, adapter = colony.weights.exported(agent)
    manifest = {"genome_id": agent.genome.id, "block_size": agent.block_size,
                "lineage": {"colony": colony.location, "agent": agent.id, "parent": agent.parent},
                "weights": f"agent {agent.id} of a colony, {colony.version(agent)} learning updates"}
    if adapter is not None:
        manifest["adapter_rank"] = lora.rank_of(adapter)

    def place(staging: Path) -> dict:
        (staging / "model.safetensors").write_bytes(weights)
        return {"metrics": {"colony_fitness": agent.fitness}}

    return write_bundle(Path(folder), agent.genome, colony.tokenizer, manifest, place, adapter)
