"""A corpus of two clearly separable domains: WikiText prose and Python source code.

Cluster-BTM's experts pay off on data whose clusters really differ; WikiText's own topics
(history, biology, music, ...) share most of their words. This folder gives the colony
benchmarks a stream where they do not: each split holds the WikiText split's articles and
as many bytes of Python standard-library modules (the running interpreter's own, so any
machine with the same Python builds the same corpus), each module an article under a
WikiText title line ` = name.py = `. A module goes to train, valid or test by a hash of
its name, so no module straddles two splits, as no article does.

    python benchmarks/mixed_corpus.py WIKITEXT_FOLDER OUT_FOLDER

The folder is a local text dataset like the WikiText copy (train.txt, valid.txt,
test.txt), with a README.md naming its sources.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sysconfig
from pathlib import Path

SPLITS = ("train", "valid", "test")
# a module's split by the first byte of its name's hash: 60% train, 20% valid, 20% test
SHARES = {"train": range(0, 154), "valid": range(154, 205), "test": range(205, 256)}


def code_articles(root: Path) -> dict[str, list[str]]:
    """The standard library's top-level modules as WikiText-style articles, by split."""
    found: dict[str, list[str]] = {split: [] for split in SPLITS}
    for path in sorted(root.glob("*.py")):
        byte = hashlib.sha256(path.name.encode()).digest()[0]
        split = next(s for s, share in SHARES.items() if byte in share)
        text = path.read_text(encoding="utf-8", errors="replace")
        # a line that looks like a title would cut the module in two articles
        lines = [line for line in text.splitlines() if not line.startswith(" = ")]
        found[split].append(f" = {path.name} = \n" + "\n".join(lines) + "\n")
    return found


def write_mixed_corpus(wikitext: Path, out: Path, code_root: Path | None = None) -> Path:
    """Write the mixed corpus into `out` (made if missing; its splits replaced)."""
    code_root = code_root or Path(sysconfig.get_paths()["stdlib"])
    code = code_articles(code_root)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split in SPLITS:
        prose = (wikitext / f"{split}.txt").read_text(encoding="utf-8")
        taken, size = [], 0
        for article in code[split]:  # modules in name order until the prose's size
            if size >= len(prose):
                break
            taken.append(article)
            size += len(article)
        (out / f"{split}.txt").write_text(prose.rstrip("\n") + "\n" + "".join(taken), encoding="utf-8")
        sizes[split] = (len(prose), size, len(taken))
    rows = "\n".join(f"| `{s}.txt` | {p:,} | {c:,} ({n} modules) |" for s, (p, c, n) in sizes.items())
    (out / "README.md").write_text(
        "# Mixed corpus: WikiText prose + Python source\n\n"
        f"Made by benchmarks/mixed_corpus.py from {wikitext} and the standard library of Python "
        f"{platform.python_version()} ({code_root}).\n\n| file | prose characters | code characters |\n"
        f"|---|---|---|\n{rows}\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wikitext", type=Path, help="the WikiText folder (train.txt, valid.txt, test.txt)")
    parser.add_argument("out", type=Path, help="the folder to write")
    args = parser.parse_args()
    print(write_mixed_corpus(args.wikitext, args.out))


if __name__ == "__main__":
    main()
