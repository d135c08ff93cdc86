"""Console plus rotating-file logging, optionally as JSON lines."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time

from p2pml.config import LogSettings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class BadRequestOneLine(logging.Filter):
    """A request that is not HTTP (a port scan, a libp2p dial to a recycled
    port) is the client's fault: one line, not aiohttp's traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__module__ == "aiohttp.http_exceptions":
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            record.msg = f"{record.getMessage()}: {type(exc).__name__} {first}".rstrip()
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(settings: LogSettings, console: bool = True) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(settings.level.upper())
    fmt: logging.Formatter = JsonFormatter() if settings.json else logging.Formatter(TEXT_FORMAT)
    if settings.file is not None:
        settings.file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(
            settings.file, maxBytes=20 * 1024 * 1024, backupCount=5, encoding="utf-8"
        )
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if console:
        ch = logging.StreamHandler(sys.stderr)
        ch.setFormatter(fmt)
        root.addHandler(ch)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadRequestOneLine) for f in server_log.filters):
        server_log.addFilter(BadRequestOneLine())
    # Third-party chatter stays out of the chain log unless asked for.
    for noisy in ("libp2p", "multiaddr", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
