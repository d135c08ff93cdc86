"""The datasets this node added (``GET /datasets``), kept in the data dir.

A small JSON file (``datasets.json``): one entry per CID with the name it was
uploaded under, its size, rows and columns when the file reads as a CSV, and
when it was first added. Written atomically (temp file, rename); a missing or
unreadable file is an empty list, never a failed start.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from aiohttp import web

log = logging.getLogger("p2pml.api")

FILE_NAME: Final = "datasets.json"
MAX_NAME: Final = 256
MAX_HEADER_BYTES: Final = 1 << 20


def csv_shape(path: Path) -> tuple[int | None, int | None]:
    """(data rows, columns) of a CSV with a header; (None, None) if it is not one.

    Rows are counted as line breaks (a quoted field spanning lines counts
    twice): a cheap figure for a listing, not a parse.
    """
    try:
        with path.open("rb") as f:
            head = f.read(MAX_HEADER_BYTES)
            line = head.split(b"\n", 1)[0].decode("utf-8-sig")
            columns = len(next(csv.reader(io.StringIO(line)), []))
            f.seek(0)
            lines, last = 0, b"\n"
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None, None
    if not columns:
        return None, None
    if last != b"\n":
        lines += 1  # no newline after the last row
    return max(lines - 1, 0), columns


class DatasetLog:
    """What this node added; ``record`` and ``entries`` are the whole interface."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME
        self._lock = asyncio.Lock()

    def entries(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return []
        if not isinstance(data, list):
            return []
        return [e for e in data if isinstance(e, dict) and "cid" in e]

    async def record(self, cid: str, name: str | None, path: Path, size: int) -> dict[str, Any]:
        rows, columns = await asyncio.to_thread(csv_shape, path)
        entry = {
            "cid": cid,
            "name": (name or "")[:MAX_NAME],
            "size": size,
            "rows": rows,
            "columns": columns,
            "added": int(time.time()),
        }
        async with self._lock:
            entries = self.entries()
            old = next((e for e in entries if e["cid"] == cid), None)
            if old is not None:  # the same bytes again: keep the first date, newest name
                entry["added"] = old.get("added", entry["added"])
                entries.remove(old)
            entries.append(entry)
            await asyncio.to_thread(self._write, entries)
        return entry

    def _write(self, entries: list[dict[str, Any]]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".datasets-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def list_handler(self, _req: web.Request) -> web.Response:
        newest_first = sorted(self.entries(), key=lambda e: -int(e.get("added", 0)))
        return web.json_response(newest_first)
