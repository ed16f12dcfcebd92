"""The agents' weight files: where they live (always derived from the agent id, inside
the colony folder), their loaded models, cached per file version, and their locks."""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock

from genesis.colony.database import AGENT_ID, Agent
from genesis.errors import GenesisError
from genesis.train.model import GPT, GPTConfig, load_weights, save_weights, weights_metadata


class AgentWeights:
    """The `agents/` folder of a colony."""

    def __init__(self, folder: Path, vocab_size: int):
        self.folder = folder
        self.vocab_size = vocab_size
        self._models: dict[tuple[str, int], GPT] = {}  # (agent id, weights mtime) -> model

    def path(self, agent_id: str) -> Path:
        """Where an agent's weights live.

        Raises:
            GenesisError: not an agent id, or the file is a symbolic link.
        """
        if not AGENT_ID.fullmatch(agent_id):
            raise GenesisError(f"{agent_id!r} is not an agent id")
        path = self.folder / "agents" / f"{agent_id}.safetensors"
        if path.is_symlink() or (self.folder / "agents").is_symlink():
            raise GenesisError(f"{path} is a symbolic link; a colony keeps its weights inside its folder")
        return path

    def load(self, agent: Agent) -> GPT:
        """A fresh model with the agent's current weights (not cached, free to change)."""
        model = GPT(GPTConfig.from_genome(agent.genome, self.vocab_size, agent.block_size))
        load_weights(model, self.path(agent.id))
        return model.eval()

    def model(self, agent: Agent) -> GPT:
        """The agent's current model, loaded from its weights file (cached per version)."""
        path = self.path(agent.id)
        key = (agent.id, path.stat().st_mtime_ns)
        if key not in self._models:
            model = self.load(agent)
            self._models = {k: v for k, v in self._models.items() if k[0] != agent.id}
            self._models[key] = model
        return self._models[key]

    def version(self, agent: Agent) -> int:
        """How many learning updates the agent's current weights carry (0 at birth)."""
        return int(weights_metadata(self.path(agent.id)).get("version", "0"))

    def save(self, agent: Agent, model: GPT, version: int) -> None:
        """Write an agent's weights (atomically) as `version` (one more than the version
        they were loaded at), and keep the loaded model current."""
        path = self.path(agent.id)
        save_weights(model, path, {"version": str(version)})
        self._models = {k: v for k, v in self._models.items() if k[0] != agent.id}
        self._models[(agent.id, path.stat().st_mtime_ns)] = model

    def lock(self, agent: Agent) -> FileLock:
        """The agent's lock: load, learn and save under it, so no update is lost."""
        return FileLock(str(self.path(agent.id).with_suffix(".lock")))
