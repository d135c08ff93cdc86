"""Compact targets, work and the retarget clamp."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pml.chain.params import DEVNET, MAIN, REGTEST
from p2pml.chain.pow import bits_to_target, block_work, retarget, target_to_bits
from p2pml.errors import ValidationError


def test_known_compact_values() -> None:
    assert bits_to_target(0x1D00FFFF) == 0xFFFF * 256 ** (0x1D - 3)  # Bitcoin's genesis
    assert bits_to_target(0x207FFFFF) == 0x7FFFFF * 256**29
    assert target_to_bits(0xFFFF * 256 ** (0x1D - 3)) == 0x1D00FFFF


@given(st.integers(1, 2**255))
def test_round_trip_rounds_down_and_is_canonical(target: int) -> None:
    bits = target_to_bits(target)
    t = bits_to_target(bits)
    assert t <= target
    assert target_to_bits(t) == bits
    assert t.bit_length() == target.bit_length() or t < target  # only low bits lost


@pytest.mark.parametrize("bits", [0x00000000, 0x01003456, 0x04923456, 0xFF123456])
def test_bad_encodings(bits: int) -> None:
    with pytest.raises(ValidationError) as exc:
        bits_to_target(bits)
    assert exc.value.reason == "bad-bits"


def test_work_is_2_256_over_target_plus_one() -> None:
    assert block_work(2**256 - 1) == 1
    assert block_work(2**255 - 1) == 2
    assert block_work(0) == 2**256


def test_retarget_clamps_to_a_quarter_and_four_times() -> None:
    limit = 2**250
    t = 2**200
    assert retarget(t, 1, 1000, limit) == bits_to_target(target_to_bits(t // 4))
    assert retarget(t, 10**9, 1000, limit) == bits_to_target(target_to_bits(t * 4))
    assert retarget(t, 1000, 1000, limit) == t
    assert retarget(t, 2000, 1000, limit) == t * 2


def test_retarget_never_above_pow_limit() -> None:
    limit = 2**220
    assert retarget(limit, 10**9, 1000, limit) == bits_to_target(target_to_bits(limit))


def test_network_parameters_are_sane() -> None:
    assert REGTEST.no_retarget and not DEVNET.no_retarget and not MAIN.no_retarget
    assert max(MAIN.pow_limit, DEVNET.pow_limit) < REGTEST.pow_limit
    assert len({MAIN.genesis_hash, DEVNET.genesis_hash, REGTEST.genesis_hash}) == 3
