"""Render a report dict (see `genesis.report.build`) as PNG plots, Markdown, HTML and JSON.

The HTML is self-contained: plots are embedded as data URIs and it loads no script,
font or stylesheet from anywhere, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from genesis.core.files import output_folder, replace_file, replace_text  # noqa: E402
from genesis.core.summary import baseline_note  # noqa: E402
from genesis.report.sections import rendered as registered_sections  # noqa: E402

FRONT_LABELS = {"val_loss": "perplexity", "params": "non-embedding parameters",
                "latency_ms": "latency", "size_bytes": "size"}
AXIS_LABELS = {"val_ppl": "validation perplexity", "params": "non-embedding parameters",
               "latency_ms": "inference latency (ms)", "size_bytes": "size (bytes)"}


def write_report(report: dict[str, Any], folder: str | Path) -> dict[str, Path]:
    """Write report.json, every plot, report.md and report.html into `folder`.

    Returns the paths written, by name.
    """
    folder = output_folder(folder)  # a run folder may come from someone else: no writing through links
    paths = {"json": replace_text(folder / "report.json", json.dumps(report, indent=2, sort_keys=True))}
    plotters = {"convergence": _plot_convergence, "diversity": _plot_diversity,
                "traits": _plot_traits, "operators_sigma": _plot_sigma, "pareto": _plot_pareto}
    for name, plot in plotters.items():
        paths[name] = folder / f"{name}.png"
        _save(plot(report), paths[name])
    sections = report_sections(report)
    paths["md"] = replace_text(folder / "report.md", _markdown(report, sections))
    paths["html"] = replace_text(folder / "report.html", _html(report, sections, paths))
    return paths


def _save(figure, path: Path) -> None:
    for axis in figure.axes:
        if axis.get_xlabel() == "generation":
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    replace_file(path, lambda temporary: figure.savefig(temporary, dpi=110, bbox_inches="tight", format="png"))
    plt.close(figure)


def compare(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Runs side by side: best perplexity per generation and trait rankings."""
    return {
        "runs": [r["run"]["id"] for r in reports],
        "strategies": {r["run"]["id"]: r["run"]["strategy"] for r in reports},
        "compute_tokens": {r["run"]["id"]: r["run"]["compute_tokens"] for r in reports},
        "convergence": {r["run"]["id"]: [(g["generation"], g["best_ppl"], g["compute_tokens"])
                                         for g in r["convergence"]["generations"]] for r in reports},
        "final_best_ppl": {r["run"]["id"]: (r["convergence"]["improvement"] or {}).get("final_best_ppl")
                           for r in reports},
        "rankings": {r["run"]["id"]: [t["trait"] for t in r["traits"]["ranking"]] for r in reports},
    }


def write_comparison(comparison: dict[str, Any], folder: str | Path) -> dict[str, Path]:
    """Write comparison.json, one convergence plot of all runs, and comparison.md."""
    folder = output_folder(folder)
    paths = {"json": folder / "comparison.json", "convergence": folder / "convergence.png",
             "md": folder / "comparison.md"}
    replace_text(paths["json"], json.dumps(comparison, indent=2, sort_keys=True))
    figure, (by_generation, by_compute) = plt.subplots(1, 2, figsize=(12, 4))
    for run_id, series in comparison["convergence"].items():
        points = [(g, p, c) for g, p, c in series if p is not None]
        by_generation.plot([g for g, _, _ in points], [p for _, p, _ in points], "o-", label=run_id)
        by_compute.plot([c / 1e6 for _, _, c in points], [p for _, p, _ in points], "o-", label=run_id)
    by_generation.set(xlabel="generation", ylabel="best validation perplexity of the generation",
                      title="Convergence")
    by_compute.set(xlabel="compute spent by the generation's end (million training tokens)",
                   title="Per unit of compute")
    for axis in (by_generation, by_compute):
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    _save(figure, paths["convergence"])
    runs = comparison["runs"]
    depth = max(len(v) for v in comparison["rankings"].values())
    lines = ["# genesis comparison", "", "![convergence](convergence.png)", "",
             "| rank | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for rank in range(depth):
        cells = [comparison["rankings"][r][rank] if rank < len(comparison["rankings"][r]) else ""
                 for r in runs]
        lines.append(f"| {rank + 1} | " + " | ".join(cells) + " |")
    lines.append("| best ppl | " + " | ".join(_fmt(comparison["final_best_ppl"][r], 4) for r in runs) + " |")
    lines.append("| strategy | " + " | ".join(comparison["strategies"][r] for r in runs) + " |")
    lines.append("| compute (training tokens) | " + " | ".join(_fmt(comparison["compute_tokens"][r]) for r in runs)
                 + " |")
    replace_text(paths["md"], "\n".join(lines) + "\n")
    return paths


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def report_sections(report: dict[str, Any]) -> list[tuple[str, str, list[str], list[list[str]], str | None]]:
    """The report's tables as (title, plot name, header, rows, note), shared by every format."""
    run = report["run"]
    conv = report["convergence"]
    improvement = conv["improvement"] or {}
    sections = [(
        "Run", None, ["field", "value"],
        [[k, _fmt(run[k])] for k in ("id", "status", "started", "seed", "recipe", "tokens_per_training",
                                      "data", "generations_seen", "generations_planned",
                                      "population", "evaluations", "trained", "cache_hits", "failed",
                                      "given_up", "compute_tokens", "retraining_tokens", "compute_budget_tokens",
                                      "strategy")],
        None)]
    sections.append((
        "Convergence", "convergence", ["generation", "best loss", "best ppl", "mean loss", "median loss"],
        [[str(r["generation"]), _fmt(r["best"], 4), _fmt(r["best_ppl"], 4), _fmt(r["mean"], 4),
          _fmt(r["median"], 4)] for r in conv["generations"]],
        (f"Best perplexity went from {_fmt(improvement.get('first_best_ppl'), 4)} in generation 0 to "
         f"{_fmt(improvement.get('final_best_ppl'), 4)} ({_fmt(improvement.get('ppl_drop_percent'))}% lower); "
         f"95% of the gain was reached by generation {_fmt(conv['generations_to_95'])}."
         + baseline_note(report.get("baselines"), report.get("best_minus_bigram")))
        if improvement else "No genome trained successfully."))
    trait_names = list(report["diversity"][0]["traits"]) if report["diversity"] else []
    sections.append((
        "Diversity", "diversity",
        ["generation", "unique", "mean distance"] + trait_names,
        [[str(r["generation"]), f"{r['unique']}/{r['size']}", _fmt(r["mean_pairwise_distance"])]
         + [_fmt(r["traits"][t].get("entropy_bits", r["traits"][t].get("spread"))) for t in trait_names]
         for r in report["diversity"]],
        "Categorical traits: entropy in bits; numeric traits: standard deviation of the value "
        "scaled to [0, 1] over its domain (σ on a log scale). Distance: mean Gower distance of "
        "all genome pairs."))
    noise = report["noise"]
    sections.append((
        "Seed noise and confirmed champions", None,
        ["rank", "genome", "traits", "test ppl", "95% CI", "fresh seeds", "val ppl at selection", "note"],
        [[str(c["rank"]), c["genome_id"], c["traits"], _fmt(c["test_ppl"], 4),
          f"{_fmt(c['test_ppl_low'], 4)} – {_fmt(c['test_ppl_high'], 4)}", str(c["seeds"]),
          _fmt(c["selection_val_ppl"], 4), "within noise of #1" if c["within_noise_of_best"] else ""]
         for c in report["confirmed"]],
        (f"Seed noise: one training's validation loss varies with its seed by sd "
         f"{_fmt(noise['val_loss_sd'], 3)} (about {_fmt(noise['ppl_percent'], 2)}% in perplexity; "
         f"{noise['df']} degrees of freedom from {noise['trainings']} fresh-seed retrainings). "
         if noise["val_loss_sd"] is not None else "Seed noise was not measured in this run. ")
        + "Confirmed champions were trained again with fresh seeds and measured on the held-out "
        "test split; the validation perplexity that selected them is optimistic (the best of many "
        "noisy draws, measured on the windows that chose it)."))
    traits = report["traits"]
    sections.append((
        "Trait importance", "traits",
        ["rank", "trait", "n", "eta² (95% CI)", "ρ (95% CI)", "loss spread", "p (Holm)", "significant",
         "fANOVA (95% CI)", "note"],
        [[_fmt(r["rank"]), r["trait"], str(r["n"]),
          f"{_fmt(r.get('eta2'))} ({_fmt(r.get('eta2_low'))}, {_fmt(r.get('eta2_high'))})" if "eta2" in r else "–",
          (f"{_fmt(r['rho'])} ({_fmt(r.get('rho_low'))}, {_fmt(r.get('rho_high'))})" if "rho" in r else "–"),
          _fmt(r.get("loss_spread")) + (" (within noise)" if r.get("within_noise") else ""),
          _fmt(r.get("p_holm")), _fmt(r.get("significant")),
          f"{_fmt(r.get('fanova'))} ({_fmt(r.get('fanova_low'))}, {_fmt(r.get('fanova_high'))})",
          r.get("note") or ""] for r in traits["ranking"]],
        "Effect = eta², the share of loss variance between a trait's values, with a bootstrap "
        "interval; ρ: Spearman for ordered traits (positive: larger values are worse). Loss spread: "
        "mean loss of the worst value minus the best (values with two or more architectures); "
        "'within noise' when seed noise alone could make it. p-values test 'no effect' "
        "(Spearman or Kruskal–Wallis) and are Holm-corrected across traits; nothing is called "
        f"significant on fewer than {traits['min_significant']} distinct architectures. "
        "Computed over distinct architectures that trained at full fidelity."
        + (f" {traits['fanova_note']}." if traits.get("fanova_note") else "")))
    per_value = [[r["trait"], value, str(v["n"]), _fmt(v["mean_loss"], 4), _fmt(v["mean_ppl"], 4)]
                 for r in traits["ranking"] for value, v in (r.get("per_value") or {}).items()]
    if per_value:
        sections.append(("Trait values", None, ["trait", "value", "n", "mean loss", "mean ppl"],
                         per_value, None))
    sections.append((
        "Training-free proxies", None, ["proxy", "n", "Spearman ρ with val loss", "p", "note"],
        [[r["proxy"], str(r["n"]), _fmt(r["rho"]), _fmt(r["p_value"]), r["note"] or ""]
         for r in report["proxies"]],
        "How well each number known before (or at the first step of) training ranks the "
        "trained genomes; negative ρ: larger values, lower loss."))
    sections.append((
        "Operators", "operators_sigma", ["operator", "children", "failed", "improved on best parent", "mean change"],
        [[r["operator"], str(r["children"]), str(r["failed"]), _fmt(r["improved_share"]),
          _fmt(r["mean_change"])] for r in report["operators"]],
        "Change = child loss minus best parent loss (negative is better); cached children are "
        "left out. The plot also shows how the weight-mutation σ evolved."))
    pareto = report["pareto"]
    sections.append((
        f"Pareto front: {' vs '.join(FRONT_LABELS[o] for o in pareto['objectives'])}", "pareto",
        ["genome", "traits", "val ppl", "non-embedding params", "latency ms", "size bytes"],
        [[p["genome_id"], p["traits"], _fmt(p["val_ppl"], 4), _fmt(p["params"]), _fmt(p["latency_ms"]),
          _fmt(p["size_bytes"])] for p in pareto["front"]],
        "Genomes no other genome beats on every one of these objectives (all minimized); the run's "
        "own objectives when it searched several. Latency varies with the machine's load."))
    sections.append((
        "Best at selection", None, ["rank", "genome", "traits", "val ppl", "params", "gen", "made by", "parents"],
        [[str(c["rank"]), c["genome_id"], c["traits"], _fmt(c["metrics"]["val_ppl"], 4),
          _fmt(c["metrics"]["params"]), str(c["generation"]), c["operator"], ", ".join(c["parents"]) or "–"]
         for c in report["champions"]],
        None))
    return sections + registered_sections(report)


def _markdown(report, sections) -> str:
    lines = [f"# genesis report: run {report['run']['id']}", ""]
    for title, plot, header, rows, note in sections:
        lines += [f"## {title}", ""]
        if plot:
            lines += [f"![{title}]({plot}.png)", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        if note:
            lines += ["", note]
        lines.append("")
    return "\n".join(lines)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%}.note{color:#555}"""


def _html(report, sections, paths) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>genesis report "
             f"{html.escape(report['run']['id'])}</title><style>{_STYLE}</style></head><body>",
             f"<h1>genesis report: run {html.escape(report['run']['id'])}</h1>"]
    for title, plot, header, rows, note in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if plot:
            data = base64.b64encode(paths[plot].read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _series(rows: Sequence[dict], key: str) -> tuple[list, list]:
    points = [(r["generation"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _plot_convergence(report):
    figure, axis = plt.subplots(figsize=(7, 4))
    rows = report["convergence"]["generations"]
    for key, style in (("best", "o-"), ("mean", "s--"), ("median", "^:")):
        x, y = _series(rows, key)
        axis.plot(x, [math.exp(v) for v in y], style, label=key)
    for name, style in (("bigram_val", "k-."), ("unigram_val", "k:")):  # how far past word statistics
        if (report.get("baselines") or {}).get(name) is not None:
            axis.axhline(math.exp(report["baselines"][name]), linestyle=style[1:], color="k", linewidth=1,
                         label=f"{name.split('_')[0]} model of the text")
    axis.set(xlabel="generation", ylabel="validation perplexity", title="Convergence")
    axis.legend()
    axis.grid(alpha=0.3)
    return figure


def _plot_diversity(report):
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rows = report["diversity"]
    generations = [r["generation"] for r in rows]
    left.plot(generations, [r["unique"] / r["size"] for r in rows], "o-", label="unique share")
    left.plot(generations, [r["mean_pairwise_distance"] for r in rows], "s--", label="mean distance")
    left.set(xlabel="generation", title="Whole genomes", ylim=(0, 1.05))
    left.legend()
    for trait in (rows[0]["traits"] if rows else {}):
        values = [r["traits"][trait].get("entropy_bits", r["traits"][trait].get("spread")) for r in rows]
        right.plot(generations, values, "o-", label=trait)
    right.set(xlabel="generation", title="Per trait (entropy bits / scaled spread)")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    return figure


def _plot_traits(report):
    ranking = sorted(report["traits"]["ranking"], key=lambda r: r["trait"])
    figure, axes = plt.subplots(1, len(ranking), figsize=(3.2 * len(ranking), 3.4), squeeze=False)
    points = report["pareto"]["points"]  # every distinct genome that trained
    for axis, row in zip(axes[0], ranking):
        name = row["trait"]
        pairs = [(p["genome"][name], p["val_ppl"]) for p in points]
        if row["kind"] == "categorical":
            labels = sorted({v for v, _ in pairs})
            axis.boxplot([[p for v, p in pairs if v == label] for label in labels])
            axis.set_xticks(range(1, len(labels) + 1), labels, rotation=30)
        elif pairs:
            axis.scatter([v for v, _ in pairs], [p for _, p in pairs], s=14, alpha=0.7)
            if name == "sigma":
                axis.set_xscale("log")
        axis.set(title=f"{name} (effect {_fmt(row['effect'])})", xlabel=name)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation perplexity")
    figure.tight_layout()
    return figure


def _plot_sigma(report):
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rows = report["operators"]
    shares = [r["improved_share"] or 0.0 for r in rows]
    left.bar([r["operator"] for r in rows], shares, color="#4a7")
    left.set(ylabel="share of children better than best parent", ylim=(0, 1), title="Operators")
    sigma = report["sigma"]
    generations = [r["generation"] for r in sigma]
    right.fill_between(generations, [r["min"] for r in sigma], [r["max"] for r in sigma], alpha=0.25)
    right.plot(generations, [r["median"] for r in sigma], "o-", label="median σ")
    right.set(xlabel="generation", ylabel="σ", yscale="log", title="Weight-mutation σ")
    right.legend()
    for axis in (left, right):
        axis.grid(alpha=0.3)
    return figure


def _plot_pareto(report):
    figure, axis = plt.subplots(figsize=(7, 4))
    pareto = report["pareto"]
    shown = [o if o != "val_loss" else "val_ppl" for o in pareto["objectives"]]
    y = "val_ppl" if "val_ppl" in shown else shown[1]
    x = next(o for o in shown if o != y)
    points, front = pareto["points"], pareto["front"]
    axis.scatter([p[x] for p in points], [p[y] for p in points], s=16, alpha=0.5, label="genomes")
    axis.plot([p[x] for p in front], [p[y] for p in front], "o-" if len(shown) == 2 else "o",
              color="C3", label="Pareto front" if len(shown) == 2 else "Pareto front (projected)")
    values = [p[x] for p in points if p[x]]
    if values and max(values) > 50 * min(values):  # e.g. one latency measured under load
        axis.set_xscale("log")
    axis.set(xlabel=AXIS_LABELS[x], ylabel=AXIS_LABELS[y], title="Pareto front")
    axis.legend()
    axis.grid(alpha=0.3)
    return figure
