"""Proof of work: compact ``bits`` <-> target, block work, retarget.

``bits`` uses Bitcoin's compact form (1 byte exponent, 3 byte mantissa, no
sign bit allowed). A header's PoW hash, read as a big-endian 256-bit integer,
must be <= its target.
"""

from __future__ import annotations

from p2pml.errors import ValidationError

TWO_256 = 1 << 256


def bits_to_target(bits: int) -> int:
    """Target for ``bits``; a negative, zero or overflowing encoding is bad-bits."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if bits & 0x00800000:
        raise ValidationError("bad-bits", "negative target")
    if exponent <= 3:
        target = mantissa >> (8 * (3 - exponent))
    else:
        if mantissa and exponent > 34:
            raise ValidationError("bad-bits", "target overflows 256 bits")
        target = mantissa << (8 * (exponent - 3))
    if target == 0 or target >= TWO_256:
        raise ValidationError("bad-bits", "target out of range")
    return target


def target_to_bits(target: int) -> int:
    """The canonical compact encoding of ``target`` (rounded down)."""
    if target <= 0:
        raise ValueError("target must be positive")
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        mantissa = target << (8 * (3 - size))
    else:
        mantissa = target >> (8 * (size - 3))
    if mantissa & 0x00800000:  # keep the sign bit clear
        mantissa >>= 8
        size += 1
    return (size << 24) | mantissa


def block_work(target: int) -> int:
    """Expected hashes to find a block: 2^256 / (target + 1)."""
    return TWO_256 // (target + 1)


def check_pow(pow_hash: bytes, target: int) -> bool:
    return int.from_bytes(pow_hash, "big") <= target


def retarget(prev_target: int, actual_timespan: int, intended_timespan: int, pow_limit: int) -> int:
    """New target from a window's timespan, clamped to [1/4, 4] x intended."""
    lo, hi = intended_timespan // 4, intended_timespan * 4
    span = min(max(actual_timespan, lo), hi)
    new = prev_target * span // intended_timespan
    new = min(new, pow_limit)
    # Round through the compact form so the result is exactly representable.
    return bits_to_target(target_to_bits(new))
