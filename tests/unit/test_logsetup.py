"""Logging set-up: bytes that are not HTTP at the admin port log one line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from p2pml.config import LogSettings
from p2pml.logsetup import setup_logging


async def send_raw(port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    await reader.read()  # the server answers 400 and closes
    writer.close()


def test_a_libp2p_hello_at_the_http_port_logs_one_line(tmp_path: Path) -> None:
    log_file = tmp_path / "node.log"
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging(LogSettings(level="debug", file=log_file), console=False)

    async def run() -> None:
        runner = web.AppRunner(web.Application())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            await send_raw(port, b"\x13/multistream/1.0.0\n\x07/noise\n")
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text = log_file.read_text()
    assert "Error handling request" in text and "BadHttpMethod" in text
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if "aiohttp.server" in line]
    assert len(lines) == 1, text
