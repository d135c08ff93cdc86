"""The admin API's bearer token, kept in a 0600 file in the data dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from p2pml.errors import ConfigError


def load_or_create_token(path: Path) -> str:
    """The token, created 0600 at first start (like a cookie file)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read admin token file: {exc.strerror}") from None
    if len(token) < 16:
        raise ConfigError(f"{path}: admin token file holds no usable token")
    return token
