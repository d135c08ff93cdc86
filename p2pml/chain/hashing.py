"""Hash functions used by consensus."""

from __future__ import annotations

import hashlib

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962-style Merkle root of transaction ids.

    Leaves and inner nodes are hashed with distinct prefixes and an odd node
    is promoted unchanged, so two different lists can never share a root
    (the duplication trick of Bitcoin's CVE-2012-2459 does not apply).
    """
    if not leaves:
        return ZERO_HASH
    level = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
