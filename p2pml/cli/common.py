"""What every command shares: exit codes, one-line errors, tables and
``--json`` output, the admin API client, the download progress bar."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2pml.api.client import ApiClient

EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG


def fail(msg: str, code: int = 1) -> int:
    print(f"p2pml: {msg}", file=sys.stderr)
    return code


def table(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def show(args: argparse.Namespace, data: Any, human: str | None = None) -> None:
    if args.json or human is None:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(human)


def kv(data: dict[str, Any], indent: str = "") -> str:
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            out.append(f"{indent}{k}:")
            out.append(kv(v, indent + "  "))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            out.append(f"{indent}{k}:")  # e.g. executor workers: one line each
            out.extend(f"{indent}  - " + ", ".join(f"{a}={b}" for a, b in x.items()) for x in v)
        else:
            out.append(f"{indent}{k}: {v}")
    return "\n".join(out)


def client(args: argparse.Namespace) -> ApiClient:
    token_file = args.token_file or os.environ.get("P2PML_TOKEN_FILE")
    path = Path(token_file) if token_file else None
    if path is None and Path("data/admin.token").exists():
        path = Path("data/admin.token")
    return ApiClient.with_token_file(args.api, path)


class ProgressBar:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if not self.tty or pct == self.last:
            return
        self.last = pct
        bar = "#" * (pct // 4)
        sys.stderr.write(
            f"\r{self.label} [{bar:<25}] {pct:3d}% {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
