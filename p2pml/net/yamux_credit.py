"""Return yamux receive credit in batches only, as go-yamux does.

py-libp2p's ``YamuxStream._auto_tune_and_send_window_update`` runs after
every read. Besides go-yamux's rule (send a WINDOW_UPDATE once the consumed
credit reaches half the window) it has a "partial slack" branch: whenever a
read consumed bytes and any credit is outstanding, it sends an update at
once. Pubsub reads each RPC as a one-byte-at-a-time varint prefix and then
its body, so that branch fired about once per inbound gossip message: one
Noise-encrypted frame and one socket write back to the sender for every
message (~20 % of the libp2p thread's non-idle py-spy samples under
scripts/bench_attack.py's flood, and what a flooding peer costs us for free).

:func:`install` wraps the method: a read that would take that branch only
records its bytes as pending release (the library's own bookkeeping for
batched credit) and sends nothing; every other case runs the library's code
unchanged. The credit comes back in one update once half the window is
consumed (the library's full-grow or pending-flush branch), so a sender is
never starved: it always has at least half a window (128 KiB) to send while
the update is on its way. Nothing changes on the wire but the number of
WINDOW_UPDATE frames.

The library also reads its ``PY_YAMUX_*`` tuning variables from the
environment at every frame and read (a few ``os.getenv`` calls each, ~4 % of
the libp2p thread under the same flood); :func:`install` makes it read each
once per process (:mod:`p2pml.net.host` sets the one it changes at import).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from libp2p.stream_muxer.yamux import yamux as _yamux

_Credit = Callable[..., Awaitable[None]]
_ORIGINAL: _Credit = _yamux.YamuxStream._auto_tune_and_send_window_update
_ENV: Callable[[str, str], str] = _yamux._py_yamux_env


async def _batched_credit(self: Any, *, bytes_read: int = 0) -> None:
    # Decided without awaiting: nothing else runs in this trio thread between
    # the check and the bookkeeping, so no lock is needed for it.
    if bytes_read > 0 and not self.window_lock.locked():
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        threshold = self._grow_threshold()
        pending = self._pending_recv_release + bytes_read
        if 0 < delta < threshold and pending < threshold:
            self._pending_recv_release = pending
            return
    await _ORIGINAL(self, bytes_read=bytes_read)


@functools.cache
def _env_once(name: str, default: str = "") -> str:
    return _ENV(name, default)


def install() -> None:
    """Patch the library's stream class and its settings reader (idempotent)."""
    _yamux.YamuxStream._auto_tune_and_send_window_update = _batched_credit  # type: ignore[method-assign]
    _yamux._py_yamux_env = _env_once
