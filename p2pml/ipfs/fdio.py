"""Small file-descriptor helpers shared by the download paths."""

from __future__ import annotations

import os
from pathlib import Path


def open_for_overwrite(path: Path) -> int:
    """A write fd on the existing file ``path``, emptied without ``O_TRUNC``.

    No ``O_CREAT``: the caller's temp file (mkstemp) must still exist, so a
    late open can never re-create a file its owner already removed.

    ext4 (auto_da_alloc) treats a file truncated to 0 by ``open`` and
    rewritten as a replace-by-truncate and flushes it to disk on close.
    Measured on 100 MB: close 3.5 ms instead of 0, and disk I/O per
    download. Download temp files are fresh from mkstemp, so empty anyway.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    if os.fstat(fd).st_size:
        os.ftruncate(fd, 0)
    return fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
