"""The nonce search, run in worker processes (never on the event loop).

The header is fixed but for its trailing 8-byte nonce, so the SHA-256 state
after the first 84 bytes (the "midstate") is computed once per range and
copied per nonce: less work per hash than hashing the whole header.
"""

from __future__ import annotations

import hashlib

from p2pml.chain.types import NONCE_OFFSET

U64 = 1 << 64


def search(prefix: bytes, target: int, start: int, count: int) -> int | None:
    """The first nonce in [start, start+count) (mod 2^64) meeting ``target``."""
    if len(prefix) != NONCE_OFFSET:
        raise ValueError("prefix must be the header without its nonce")
    mid = hashlib.sha256(prefix)
    sha256 = hashlib.sha256
    # The hash is read big-endian, so compare bytes instead of building ints:
    # a 32-byte big-endian string compares like the integer it encodes.
    target_bytes = target.to_bytes(32, "big")
    end = start + count
    if end <= U64:
        for nonce in range(start, end):
            h = mid.copy()
            h.update(nonce.to_bytes(8, "big"))
            if sha256(h.digest()).digest() <= target_bytes:
                return nonce
        return None
    found = search(prefix, target, start, U64 - start)
    return found if found is not None else search(prefix, target, 0, end - U64)


def bare_double_sha256(header: bytes, count: int) -> int:
    """Baseline for the benchmark: a plain hashlib double-SHA-256 loop."""
    sha256 = hashlib.sha256
    prefix = header[:NONCE_OFFSET]
    acc = 0
    for nonce in range(count):
        acc ^= sha256(sha256(prefix + nonce.to_bytes(8, "big")).digest()).digest()[0]
    return acc
