"""An agent leaves its colony as a bundle (`genesis.colony.bundle`'s Hugging Face layout):
its seed bundle's weights with its own adapter beside them, or its whole model."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from genesis.colony.bundle import write_bundle
from genesis.colony.colony import Colony
from genesis.colony.database import bases_table
from genesis.colony.weights import AdapterWeights
from genesis.errors import GenesisError
from genesis.train.model import weights_bytes


def export_agent(colony: Colony, agent_id: str, folder: str | Path) -> Path:
    """Write agent `agent_id` of `colony` as a bundle in `folder`; it loads with
    `genesis.load_agent`, generates text and seeds new colonies.

    Raises:
        GenesisError: no such agent.
    """
    agent = next((a for a in colony.agents(alive_only=False) if a.id == agent_id), None)
    if agent is None:
        raise GenesisError(f"{colony.location} has no agent {agent_id!r}")
    manifest = {"genome_id": agent.genome.id, "block_size": agent.block_size,
                "lineage": {"colony": colony.location, "agent": agent.id, "parent": agent.parent},
                "weights": f"agent {agent.id} of a colony, {colony.version(agent)} learning updates"}
    adapter = None
    if isinstance(colony.weights, AdapterWeights):
        with colony.store.read() as db:
            data = db.execute(sa.select(bases_table.c.data)
                              .where(bases_table.c.id == colony.weights.base_of(agent))).scalar_one()
        adapter = colony.weights.adapter(agent)
        manifest["adapter_rank"] = colony.settings.adapter_rank
    else:
        data = weights_bytes(colony.model(agent))

    def place(staging: Path) -> dict:
        (staging / "model.safetensors").write_bytes(data)
        return {"metrics": {"colony_fitness": agent.fitness}}

    return write_bundle(Path(folder), agent.genome, colony.tokenizer, manifest, place, adapter)
