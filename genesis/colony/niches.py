"""Who retires when a colony is above its cap: selection policies.

- **fitness** (the baseline): the lowest-fitness agents, whatever they are.
- **species** (niching, as NEAT's speciation protects new structures): agents of one
  architecture (the genome's training identity) are a species, and the one that retires
  is the weakest member of the most populous species. Every species keeps an agent while
  the cap allows, so a stream that drifts from one topic to another does not wipe out
  the champion that is weak on the current topic but strong on the next.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

SELECTIONS = ("fitness", "species")


def retiring(alive: Sequence[tuple[str, str]], cap: int, policy: str) -> list[str]:
    """The ids that retire so that `cap` agents stay.

    Args:
        alive: (agent id, species) of every living agent, weakest first (the colony's
            order: fitness, then the younger, then the id).
        cap: the population cap.
        policy: one of `SELECTIONS`.
    """
    excess = len(alive) - cap
    if excess <= 0:
        return []
    if policy == "fitness":
        return [agent for agent, _ in alive[:excess]]
    if policy != "species":
        raise ValueError(f"unknown selection {policy!r}")
    members = Counter(species for _, species in alive)
    remaining, retired = list(alive), []
    for _ in range(excess):
        largest = max(members.values())
        victim = next(entry for entry in remaining if members[entry[1]] == largest)
        remaining.remove(victim)
        members[victim[1]] -= 1
        retired.append(victim[0])
    return retired
