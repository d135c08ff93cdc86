"""Consensus data types: block header, block, transactions.

Every type is a frozen dataclass. Each transaction type knows its canonical
wire form (``to_wire``: a msgpack array whose first item is the type's tag,
see ``docs/protocol.md``), so its id and signature need nothing else;
:mod:`p2pml.chain.encoding` decodes, and :mod:`p2pml.chain.txrules` maps each
type to the handler with its checks and state changes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgpack

from p2pml.chain.hashing import sha256d
from p2pml.chain.taskspec import TaskSpec
from p2pml.crypto import Identity

# Wire tags of the transaction types (protocol constants).
TAG_COINBASE = 0
TAG_TASK = 1
TAG_RESULT = 2
TAG_ALLOCATION = 3
TAG_TRANSFER = 4
TAG_BOND = 5
TAG_UNBOND = 6
TAG_ATTEST = 7
TAG_CHALLENGE = 8
TAG_UPDATE = 9
TAG_ROUND_CLOSE = 10

# Signature domains: a signature for one type never verifies as another's.
DOMAIN_TASK = b"task"
DOMAIN_RESULT = b"result"
DOMAIN_TRANSFER = b"transfer"
DOMAIN_BOND = b"bond"
DOMAIN_UNBOND = b"unbond"
DOMAIN_ATTEST = b"attest"
DOMAIN_CHALLENGE = b"challenge"
DOMAIN_UPDATE = b"fed-update"


def packb(obj: Any) -> bytes:
    """Canonical msgpack: arrays, smallest integer encodings, bin for bytes."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def signed_payload(network: bytes, unsigned_wire: list[Any]) -> bytes:
    """What a transaction's signature covers: the network's genesis hash (32
    bytes), then the canonical msgpack of its unsigned wire form. Committing
    to the network means nothing signed for devnet verifies on main or
    regtest (cross-network replay), though the transaction bytes are the same.
    """
    return network + packb(unsigned_wire)


# version u32 | height u32 | prev 32 | tx_root 32 | time u64 | bits u32 | nonce u64
HEADER_FORMAT = ">II32s32sQIQ"
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)  # 92
NONCE_OFFSET = HEADER_SIZE - 8
_HEADER = struct.Struct(HEADER_FORMAT)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    version: int
    height: int
    prev_hash: bytes
    tx_root: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return _HEADER.pack(
            self.version,
            self.height,
            self.prev_hash,
            self.tx_root,
            self.time,
            self.bits,
            self.nonce,
        )

    @staticmethod
    def deserialize(data: bytes) -> BlockHeader:
        """Caller guarantees ``len(data) == HEADER_SIZE`` (see encoding)."""
        return BlockHeader(*_HEADER.unpack(data))

    @property
    def hash(self) -> bytes:
        return sha256d(self.serialize())


@dataclass(frozen=True, slots=True)
class Coinbase:
    """Pays the block reward (plus fees, once they exist) to ``miner``.

    ``height`` makes every coinbase unique; ``extra`` is free for miners.
    """

    height: int
    miner: bytes
    amount: int
    extra: bytes = b""

    def to_wire(self) -> list[Any]:
        return [TAG_COINBASE, self.height, self.miner, self.amount, self.extra]


@dataclass(frozen=True, slots=True)
class Allocation:
    """Genesis only (devnet, regtest): credit ``amount`` to ``pubkey`` and
    lock ``bond`` more as its trainer bond (registered at height 0), so dev
    keys can report results from the first task on."""

    pubkey: bytes
    amount: int
    bond: int = 0

    def to_wire(self) -> list[Any]:
        return [TAG_ALLOCATION, self.pubkey, self.amount, self.bond]


@dataclass(frozen=True)
class TaskTx:
    """A signed training task. Including it costs ``fee`` (to the miner) and
    escrows ``bounty + result_reward * max_results`` from the publisher."""

    spec: TaskSpec
    bounty: int
    fee: int
    deadline: int  # blocks after the including block
    result_reward: int
    max_results: int
    publisher: bytes
    nonce: int
    signature: bytes = b""

    def unsigned_wire(self) -> list[Any]:
        return [
            TAG_TASK,
            self.spec.to_wire(),
            self.bounty,
            self.fee,
            self.deadline,
            self.result_reward,
            self.max_results,
            self.publisher,
            self.nonce,
        ]

    def to_wire(self) -> list[Any]:
        return [*self.unsigned_wire(), self.signature]

    def signed_by(self, ident: Identity, network: bytes) -> TaskTx:
        """Signed for the network whose genesis hash is ``network``."""
        sig = ident.sign(DOMAIN_TASK, signed_payload(network, self.unsigned_wire()))
        return TaskTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return sha256d(packb(self.to_wire()))

    @property
    def escrow(self) -> int:
        return self.bounty + self.result_reward * self.max_results


@dataclass(frozen=True)
class ResultTx:
    """A trainer's signed claim for one (task, round)."""

    task_id: bytes
    # Hash of the block that included the task, i.e. the seed the trainer
    # used: a task mined in two competing blocks has two seeds, and a result
    # for one is stale (not false) on the other branch.
    seed: bytes
    round: int
    trainer: bytes
    metric: float
    model_cid: str
    train_rows: int
    train_ms: int
    # Paid by the trainer to the miner that includes the result (at least
    # the network's ``min_result_fee``): flooding results costs money.
    fee: int = 0
    signature: bytes = b""

    def unsigned_wire(self) -> list[Any]:
        return [
            TAG_RESULT,
            self.task_id,
            self.seed,
            self.round,
            self.trainer,
            self.metric,
            self.model_cid,
            self.train_rows,
            self.train_ms,
            self.fee,
        ]

    def to_wire(self) -> list[Any]:
        return [*self.unsigned_wire(), self.signature]

    def signed_by(self, ident: Identity, network: bytes) -> ResultTx:
        """Signed for the network whose genesis hash is ``network``."""
        sig = ident.sign(DOMAIN_RESULT, signed_payload(network, self.unsigned_wire()))
        return ResultTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return sha256d(packb(self.to_wire()))


@dataclass(frozen=True)
class TransferTx:
    """Moves ``amount`` from ``sender`` to ``recipient``; ``fee`` goes to the
    miner. ``nonce`` is the sender's free choice: it makes two otherwise
    equal transfers distinct, and the chain refuses any transfer id it has
    seen (``duplicate-transfer``), so a transfer cannot be replayed."""

    sender: bytes
    recipient: bytes
    amount: int
    fee: int
    nonce: int
    signature: bytes = b""

    def unsigned_wire(self) -> list[Any]:
        return [TAG_TRANSFER, self.sender, self.recipient, self.amount, self.fee, self.nonce]

    def to_wire(self) -> list[Any]:
        return [*self.unsigned_wire(), self.signature]

    def signed_by(self, ident: Identity, network: bytes) -> TransferTx:
        """Signed for the network whose genesis hash is ``network``."""
        sig = ident.sign(DOMAIN_TRANSFER, signed_payload(network, self.unsigned_wire()))
        return TransferTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return sha256d(packb(self.to_wire()))


@dataclass(frozen=True)
class BondTx:
    """Locks ``amount`` of ``trainer``'s balance as its trainer bond; ``fee``
    goes to the miner. ``nonce`` makes two bonds of one key distinct (the
    chain refuses an id it has seen: ``duplicate-bond``)."""

    trainer: bytes
    amount: int
    fee: int
    nonce: int
    signature: bytes = b""

    def unsigned_wire(self) -> list[Any]:
        return [TAG_BOND, self.trainer, self.amount, self.fee, self.nonce]

    def to_wire(self) -> list[Any]:
        return [*self.unsigned_wire(), self.signature]

    def signed_by(self, ident: Identity, network: bytes) -> BondTx:
        """Signed for the network whose genesis hash is ``network``."""
        sig = ident.sign(DOMAIN_BOND, signed_payload(network, self.unsigned_wire()))
        return BondTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return sha256d(packb(self.to_wire()))


@dataclass(frozen=True)
class UnbondTx:
    """Asks the release of ``trainer``'s bond (after the network's
    ``unbond_delay``); ``fee`` goes to the miner."""

    trainer: bytes
    fee: int
    nonce: int
    signature: bytes = b""

    def unsigned_wire(self) -> list[Any]:
        return [TAG_UNBOND, self.trainer, self.fee, self.nonce]

    def to_wire(self) -> list[Any]:
        return [*self.unsigned_wire(), self.signature]

    def signed_by(self, ident: Identity, network: bytes) -> UnbondTx:
        """Signed for the network whose genesis hash is ``network``."""
        sig = ident.sign(DOMAIN_UNBOND, signed_payload(network, self.unsigned_wire()))
        return UnbondTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return sha256d(packb(self.to_wire()))


@dataclass(frozen=True)
class ChallengeTx:
    """A fraud proof's opening: ``challenger`` (a bonded key) disputes the
    result ``result_id``, staking part of its bond on the result's audit
    failing; ``fee`` goes to the miner. Every node re-runs the result's full
    audit at the dispute's resolution height (docs/consensus.md "Disputes")."""

    challenger: bytes
    result_id: bytes
    fee: int
    nonce: int
    signature: bytes = b""

    def unsigned_wire(self) -> list[Any]:
        return [TAG_CHALLENGE, self.challenger, self.result_id, self.fee, self.nonce]

    def to_wire(self) -> list[Any]:
        return [*self.unsigned_wire(), self.signature]

    def signed_by(self, ident: Identity, network: bytes) -> ChallengeTx:
        """Signed for the network whose genesis hash is ``network``."""
        sig = ident.sign(DOMAIN_CHALLENGE, signed_payload(network, self.unsigned_wire()))
        return ChallengeTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return sha256d(packb(self.to_wire()))


@dataclass(frozen=True)
class AttestTx:
    """A committee member's verdict on a result it was drawn to audit
    (docs/consensus.md "Audit committees"): ``passed`` is True if its full
    re-run of the result matched the claim. ``fee`` goes to the miner (it may
    be 0: attestations are bounded by the committees, not by fees)."""

    attester: bytes
    result_id: bytes
    passed: bool
    fee: int
    signature: bytes = b""

    def unsigned_wire(self) -> list[Any]:
        return [TAG_ATTEST, self.attester, self.result_id, self.passed, self.fee]

    def to_wire(self) -> list[Any]:
        return [*self.unsigned_wire(), self.signature]

    def signed_by(self, ident: Identity, network: bytes) -> AttestTx:
        """Signed for the network whose genesis hash is ``network``."""
        sig = ident.sign(DOMAIN_ATTEST, signed_payload(network, self.unsigned_wire()))
        return AttestTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return sha256d(packb(self.to_wire()))


@dataclass(frozen=True)
class UpdateTx:
    """A participant's signed update to round ``round`` of a federated task:
    the CID of the canonical encoding of its parameter vector
    (docs/federated.md §4) and the rows it trained on. ``base`` commits to the
    model it was trained from (SHA-256 of G_r's encoding, protocol 7), so an
    update trained from a G_r that a reorg replaced is invalid everywhere."""

    task_id: bytes
    seed: bytes  # hash of the block that included the task (as ResultTx.seed)
    round: int
    participant: bytes
    update_cid: str
    n_samples: int
    fee: int
    signature: bytes = b""
    # Keyword-only: the wire puts it after ``round`` (see unsigned_wire).
    base: bytes = field(kw_only=True)

    def unsigned_wire(self) -> list[Any]:
        return [
            TAG_UPDATE,
            self.task_id,
            self.seed,
            self.round,
            self.base,
            self.participant,
            self.update_cid,
            self.n_samples,
            self.fee,
        ]

    def to_wire(self) -> list[Any]:
        return [*self.unsigned_wire(), self.signature]

    def signed_by(self, ident: Identity, network: bytes) -> UpdateTx:
        """Signed for the network whose genesis hash is ``network``."""
        sig = ident.sign(DOMAIN_UPDATE, signed_payload(network, self.unsigned_wire()))
        return UpdateTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return sha256d(packb(self.to_wire()))


#: A round close's gains: one per update (at most P <= 1000, fedspec's
#: MAX_PARTICIPANTS), each an integer in micro-units of the task metric,
#: capped where float64 still counts every integer.
MAX_GAINS = 1_000
MAX_GAIN = 2**53 - 1


@dataclass(frozen=True)
class RoundCloseTx:
    """Closes round ``round`` of a federated task by committing the hash of
    G_{round+1}. Unsigned and free, like the coinbase: its content is fixed by
    the chain, and a block with another hash is invalid (``bad-round-hash``).
    ``gains`` (protocol 7): each update's validation gain for a task rewarding
    improvement, in the round's inclusion order; () for every other task or a
    round whose validation set does not parse (``bad-round-gains``)."""

    task_id: bytes
    round: int
    model_hash: bytes
    gains: tuple[int, ...] = ()

    @property
    def fee(self) -> int:
        return 0

    def to_wire(self) -> list[Any]:
        return [TAG_ROUND_CLOSE, self.task_id, self.round, self.model_hash, list(self.gains)]

    @cached_property
    def id(self) -> bytes:
        return sha256d(packb(self.to_wire()))


Transaction = (
    Coinbase
    | Allocation
    | TaskTx
    | ResultTx
    | TransferTx
    | BondTx
    | UnbondTx
    | AttestTx
    | ChallengeTx
    | UpdateTx
    | RoundCloseTx
)
#: What users send and the mempool holds (coinbases and allocations are made
#: by miners and genesis only). Every one names its fee.
PoolTx = TaskTx | ResultTx | TransferTx | BondTx | UnbondTx | AttestTx | ChallengeTx | UpdateTx


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[Transaction, ...]
    # Cached encodings are filled by the decoder/builder; never part of equality.
    _raw: bytes | None = field(default=None, compare=False, repr=False)

    @cached_property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def prev_hash(self) -> bytes:
        return self.header.prev_hash
