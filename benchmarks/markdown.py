"""``python -m benchmarks.markdown [FILE]``: a results file as a Markdown table.

Prints the rows of ``bench-results.json`` (or FILE) the way the README shows
them: figure, backend, n, value with unit, baseline, ratio, target and whether
it was met, followed by the machine line.  Numbers are copied from the file,
never recomputed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _met(row: dict[str, Any]) -> str:
    met = row.get("meets_target")
    return "–" if met is None else ("yes" if met else "**no**")


def table(doc: dict[str, Any]) -> str:
    lines = [
        "| figure | backend | n | value | baseline | ratio | target | met |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in doc["results"]:
        lines.append(
            f"| {r['name']} | {r['backend']} | {r['n']:,} | {_num(r['value'])} {r['unit']} "
            f"| {_num(r.get('baseline'))} | {_num(r.get('ratio'))} | {r.get('target') or '–'} "
            f"| {_met(r)} |"
        )
    parts: list[str] = []
    for k, v in doc.get("machine", {}).items():
        if isinstance(v, dict):
            parts += [f"{name} {ver}" for name, ver in v.items() if ver is not None]
        elif v is not None:
            parts.append(f"{k} {v}")
    lines.append("")
    lines.append("Machine: " + ", ".join(parts))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.markdown", description=__doc__)
    parser.add_argument("file", nargs="?", default="bench-results.json")
    args = parser.parse_args(argv)
    print(table(json.loads(Path(args.file).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
