"""Wire constants and the sync message codec (see docs/protocol.md).

Sync messages are canonical msgpack arrays (the same codec as blocks):

* request ``[0]`` status -> ``[0, genesis, tip, height, work]``
* request ``[1, locator, stop]`` headers -> ``[1, [header92, ...]]``
* request ``[2, [hash, ...]]`` blocks -> ``[2, [block_bytes, ...]]``

Every decoder raises only :class:`~p2pml.errors.DecodeError`, and, like the
block codec, re-encodes what it read and demands the same bytes: a message
has one encoding (no non-minimal integers or lengths, no padded work).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pml.chain.encoding import expect_bytes, expect_int, expect_list, unpackb
from p2pml.chain.hashing import HASH_SIZE
from p2pml.chain.types import HEADER_SIZE, packb
from p2pml.errors import DecodeError

# Version 7: rewards by validation improvement (a federated spec key
# "reward"; round closes carry each update's gain, recorded per round and
# splitting the round's share of the bounty).
# Version 6: audit committees drawn by a hashed shuffle of the bonded-key
# index (O(committee size) per selected result); federated tasks with private
# shards, robust rules (median, trimmed mean) and local DP on the chain (new
# federated spec keys, epsilon recorded per round, equal payout shares for
# private tasks, a deadline that fits the rounds; dp-accounting is part of the
# network's runtime).
# Version 7: an update commits to the model it was trained from (``base``,
# the hash of G_r; ``update-wrong-base``), so a reorg's stale updates leave
# every pool; an included update locks its participant's bond until the
# task is paid. Version 6: private shards, robust rules and local DP.
# Version 5: federated rounds (update and round-close transactions, an
# "updates" topic); results included after the cheap checks only; audit
# committees drawn from a beacon block (attest transactions, an "attests"
# topic), part of each result fee held back for its committee; challenges
# (a "challenges" topic), disputes and slashing; per-result rewards paid
# after the window. Version 4: trainer bonds (bond and unbond transactions,
# a "bonds" topic), result fees, payouts a window after close. Version 3:
# signatures commit to the genesis hash, transfers (a "transfers" topic),
# the timewarp rule.
# Version 2: a minimum bounty per task round.
# Topic and sync protocol names carry it, so nodes of other versions do not
# exchange messages they would judge differently.
PROTOCOL_VERSION = 7
KINDS = ("blocks", "tasks", "results", "transfers", "bonds", "attests", "challenges", "updates")

MAX_HEADERS = 2_000
MAX_LOCATOR = 101
MAX_BLOCKS_PER_REQUEST = 128
MAX_BLOCKS_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_REQUEST_BYTES = 16 * 1024
MAX_RESPONSE_BYTES = MAX_BLOCKS_RESPONSE_BYTES + 1024 * 1024  # one block may overshoot
MAX_WORK_BYTES = 64
# Gossip RPC frame cap: go/js default; bigger frames reset the stream.
MAX_GOSSIP_RPC_BYTES = 1024 * 1024

REQ_STATUS = 0
REQ_HEADERS = 1
REQ_BLOCKS = 2

# Penalties add to a peer's score; at BAN_THRESHOLD it is disconnected and banned.
BAN_THRESHOLD = 100
PENALTY_INVALID = 100  # invalid block/message, bad signature, bad PoW, garbage
PENALTY_MALFORMED = 100  # undecodable or oversize message / response
PENALTY_UNCONNECTED = 100  # header chain that does not connect
PENALTY_WRONG_NETWORK = 100  # different genesis
PENALTY_UNREQUESTED = 20  # block we did not ask for in a response
PENALTY_MILD = 0  # late, duplicate, orphan, time-too-new: never misbehaviour

# Reject reasons that honest peers produce (races, clocks): never penalised.
BENIGN_REASONS = frozenset(
    {
        "duplicate",
        "prev-unknown",
        "time-too-new",
        "pending-data",
        "orphan",
        "low-work",
        "missing-ancestors",
    }
)


def topic_name(network: str, kind: str) -> str:
    return f"/p2pml/{network}/{kind}/{PROTOCOL_VERSION}"


def sync_protocol(network: str) -> str:
    return f"/p2pml/{network}/sync/{PROTOCOL_VERSION}"


@dataclass(frozen=True)
class StatusMsg:
    genesis_hash: bytes
    tip_hash: bytes
    height: int
    chain_work: int


@dataclass(frozen=True)
class HeadersReq:
    locator: tuple[bytes, ...]
    stop: bytes | None


@dataclass(frozen=True)
class BlocksReq:
    hashes: tuple[bytes, ...]


Request = None | HeadersReq | BlocksReq  # None is the status request


def encode_request(req: Request) -> bytes:
    if req is None:
        return packb([REQ_STATUS])
    if isinstance(req, HeadersReq):
        return packb([REQ_HEADERS, list(req.locator), req.stop or b""])
    return packb([REQ_BLOCKS, list(req.hashes)])


def _hash(v: Any, name: str) -> bytes:
    return expect_bytes(v, name, HASH_SIZE)


def _canonical(data: bytes, encoded: bytes, what: str) -> None:
    if encoded != bytes(data):
        raise DecodeError(f"{what}: non-canonical encoding")


def decode_request(data: bytes) -> Request:
    req = _decode_request(data)
    _canonical(data, encode_request(req), "request")
    return req


def _decode_request(data: bytes) -> Request:
    f = expect_list(unpackb(data, MAX_REQUEST_BYTES), "request")
    if not f:
        raise DecodeError("request: empty")
    kind = f[0]
    if kind == REQ_STATUS and type(kind) is int:
        expect_list(f, "status request", 1)
        return None
    if kind == REQ_HEADERS and type(kind) is int:
        expect_list(f, "headers request", 3)
        loc = expect_list(f[1], "locator")
        if not 0 < len(loc) <= MAX_LOCATOR:
            raise DecodeError(f"locator: 1..{MAX_LOCATOR} hashes")
        stop = expect_bytes(f[2], "stop", max_size=HASH_SIZE)
        if stop and len(stop) != HASH_SIZE:
            raise DecodeError("stop: expected 0 or 32 bytes")
        return HeadersReq(tuple(_hash(h, "locator") for h in loc), stop or None)
    if kind == REQ_BLOCKS and type(kind) is int:
        expect_list(f, "blocks request", 2)
        hs = expect_list(f[1], "hashes")
        if not 0 < len(hs) <= MAX_BLOCKS_PER_REQUEST:
            raise DecodeError(f"blocks request: 1..{MAX_BLOCKS_PER_REQUEST} hashes")
        return BlocksReq(tuple(_hash(h, "hash") for h in hs))
    raise DecodeError(f"request: unknown kind {kind!r}")


def encode_status(s: StatusMsg) -> bytes:
    work = s.chain_work.to_bytes(max(1, (s.chain_work.bit_length() + 7) // 8), "big")
    return packb([REQ_STATUS, s.genesis_hash, s.tip_hash, s.height, work])


def decode_status(data: bytes) -> StatusMsg:
    f = expect_list(unpackb(data, 1024), "status", 5)
    if f[0] != REQ_STATUS or type(f[0]) is not int:
        raise DecodeError("status: wrong kind")
    work = expect_bytes(f[4], "status.work", max_size=MAX_WORK_BYTES)
    status = StatusMsg(
        genesis_hash=_hash(f[1], "status.genesis"),
        tip_hash=_hash(f[2], "status.tip"),
        height=expect_int(f[3], "status.height", hi=2**32 - 1),
        chain_work=int.from_bytes(work, "big"),
    )
    _canonical(data, encode_status(status), "status")
    return status


def encode_headers(headers: list[bytes]) -> bytes:
    return packb([REQ_HEADERS, headers])


def decode_headers(data: bytes) -> list[bytes]:
    f = expect_list(unpackb(data, MAX_HEADERS * (HEADER_SIZE + 3) + 64), "headers", 2)
    if f[0] != REQ_HEADERS or type(f[0]) is not int:
        raise DecodeError("headers: wrong kind")
    hs = expect_list(f[1], "headers.list")
    if len(hs) > MAX_HEADERS:
        raise DecodeError(f"headers: more than {MAX_HEADERS}")
    headers = [expect_bytes(h, "header", HEADER_SIZE) for h in hs]
    _canonical(data, encode_headers(headers), "headers")
    return headers


def encode_blocks(blocks: list[bytes]) -> bytes:
    return packb([REQ_BLOCKS, blocks])


def decode_blocks(data: bytes, max_block_bytes: int) -> list[bytes]:
    f = expect_list(unpackb(data, MAX_RESPONSE_BYTES), "blocks", 2)
    if f[0] != REQ_BLOCKS or type(f[0]) is not int:
        raise DecodeError("blocks: wrong kind")
    bs = expect_list(f[1], "blocks.list")
    if len(bs) > MAX_BLOCKS_PER_REQUEST:
        raise DecodeError(f"blocks: more than {MAX_BLOCKS_PER_REQUEST}")
    blocks = [expect_bytes(b, "block", max_size=max_block_bytes) for b in bs]
    _canonical(data, encode_blocks(blocks), "blocks")
    return blocks
