"""Write benchmark results as JSON and as a Markdown table, the two forms every script saves."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub Markdown table of ``rows`` restricted to ``columns`` (floats to 4 significant digits)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(column)) for column in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def save_report(out_dir: str | Path, name: str, rows: list[dict], columns: list[str], context: dict) -> str:
    """Save ``name.json`` (rows + context: machine, date) and ``name.md``; return the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    context = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(), **context}
    (out / f"{name}.json").write_text(json.dumps({"context": context, "rows": rows}, indent=2))
    table = markdown_table(rows, columns)
    (out / f"{name}.md").write_text(f"# {name}\n\n{_context_lines(context)}\n\n{table}\n")
    return table


def _context_lines(context: dict) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in context.items())
