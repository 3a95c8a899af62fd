"""Options shared by several commands, and output helpers."""

from __future__ import annotations

import json
from typing import Any, Callable

import click

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON instead of a table.")
device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (CUDA when present), cpu, cuda or cuda:N.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]],
          fmt: dict[str, Callable[[Any], str]] | None = None) -> str:
    """A plain aligned text table: ``columns`` are (key, header) pairs."""
    fmt = fmt or {}
    cells = [[h for _, h in columns]]
    for r in rows:
        cells.append([fmt.get(k, lambda v: "-" if v is None else str(v))(r.get(k)) for k, _ in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
