"""Report sections added from outside: one function that computes a section from a run,
one that renders it as a table. Every output (rich tables, Markdown, HTML, JSON) shows
them after the built-in sections.

    from genesis.report.sections import register_section
    register_section("size", compute=lambda run: ..., render=lambda data: (title, None, header, rows, note))
"""

from __future__ import annotations

from typing import Any, Callable

# (title, plot name or None, header, rows, note or None): what every output format renders
Rendered = tuple[str, "str | None", list[str], list[list[str]], "str | None"]
_REGISTRY: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Rendered]]] = {}
BUILT_IN = ("run", "noise", "confirmed", "convergence", "diversity", "traits", "operators", "sigma",
            "proxies", "pareto", "champions", "alpha")


def register_section(name: str, compute: Callable[[Any], Any], render: Callable[[Any], Rendered]) -> None:
    """Add a section: `compute(run)` (a `genesis.Run`) returns JSON-ready data, stored in the
    report under `name`; `render(data)` returns (title, plot, header, rows, note)."""
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in section of the report")
    _REGISTRY[name] = (compute, render)


def computed(run) -> dict[str, Any]:
    """The registered sections' data for `run`."""
    return {name: compute(run) for name, (compute, _) in _REGISTRY.items()}


def rendered(report: dict[str, Any]) -> list[Rendered]:
    """The registered sections of a built report, rendered (sections it lacks are skipped)."""
    return [render(report[name]) for name, (_, render) in _REGISTRY.items() if name in report]
