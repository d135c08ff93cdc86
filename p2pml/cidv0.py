"""CIDv0 syntax: base58btc text of a sha2-256 multihash (``Qm...``, 46 chars).

Pure and dependency-free, so the consensus rules (result model CIDs), the
task spec (dataset CIDs) and the IPFS layer share one definition.
"""

from __future__ import annotations

SHA2_256 = 0x12
B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(B58_ALPHABET)}


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    chars = []
    while n:
        n, rem = divmod(n, 58)
        chars.append(B58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(chars))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise ValueError(f"invalid base58 character {c!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def is_cidv0(text: object) -> bool:
    """True if ``text`` is a well-formed CIDv0 (base58btc sha2-256 multihash)."""
    if not isinstance(text, str) or len(text) != 46 or not text.startswith("Qm"):
        return False
    try:
        raw = b58decode(text)
    except ValueError:
        return False
    return len(raw) == 34 and raw[0] == SHA2_256 and raw[1] == 32
