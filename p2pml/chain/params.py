"""Network parameters and genesis blocks for main, devnet and regtest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from p2pml.chain.encoding import tx_id, with_raw
from p2pml.chain.hashing import ZERO_HASH, merkle_root
from p2pml.chain.pow import bits_to_target, block_work, check_pow, target_to_bits
from p2pml.chain.types import Allocation, Block, BlockHeader, Coinbase, Transaction
from p2pml.crypto import Identity

BLOCK_VERSION = 1
# Genesis pays nobody: an all-zero key that has no private key anyone knows.
GENESIS_MINER = bytes(32)
DEV_KEYS = 8
DEV_ALLOCATION = 10**12


def dev_identity(i: int) -> Identity:
    """Well-known keys funded in the devnet and regtest genesis (like regtest's
    well-known keys elsewhere): anyone can spend them, so never on main."""
    return Identity.from_seed(hashlib.sha256(b"p2pml dev key %d" % i).digest())


def dev_allocations(bond: int = 0) -> tuple[tuple[bytes, int, int], ...]:
    """Each dev key's (pubkey, balance, bond): bonded in genesis, a dev key
    may report results from the first task on (and unbond like any key)."""
    return tuple((dev_identity(i).public_key, DEV_ALLOCATION, bond) for i in range(DEV_KEYS))


@dataclass(frozen=True)
class NetworkParams:
    name: str
    genesis_time: int
    genesis_nonce: int
    pow_limit_bits: int
    target_spacing: int  # seconds between blocks, intended
    retarget_window: int  # blocks per difficulty period
    no_retarget: bool
    max_block_bytes: int
    max_block_txs: int
    max_future_seconds: int
    coinbase_reward: int
    median_time_span: int = 11
    min_task_fee: int = 1_000
    # A transfer pays at least this to the miner: moving coins is never free.
    min_transfer_fee: int = 1_000
    # BIP-94 timewarp bound: the first block of a retarget window may be at
    # most this many seconds older than its parent. Ten target spacings:
    # above the backward step the median-time rule lets honest blocks take
    # (about five spacings), small against a window (main: 600 s of 12 h).
    timewarp_seconds: int = 600
    # The exact library versions verdicts depend on (a re-trained model's
    # metric may change with them): a node whose installed versions differ
    # must not judge results (see p2pml/node/runtime.py).
    runtime: tuple[tuple[str, str], ...] = ()
    # A task's bounty must be at least this per round it asks for, so
    # demanding the network's compute is never free (0: no minimum).
    min_round_bounty: int = 0
    # Share of results drawn for a committee audit by their beacon (winners
    # of a bounty always are): docs/consensus.md "Audit committees".
    audit_fraction: float = 1.0
    # Audit committees: a result included at height h is judged by the
    # beacon, the hash of the block at h + ``audit_delay`` (the includer
    # cannot grind it without grinding that many blocks of work), which
    # draws ``committee_size`` bonded keys; they attest in the
    # ``attest_window`` blocks after the beacon and are paid from the part
    # ``attest_fee_share`` (at most 4 decimals) of the result's fee held back
    # from the including miner.
    audit_delay: int = 6
    committee_size: int = 3
    attest_window: int = 30
    attest_fee_share: float = 0.5
    # Trainer bonds (docs/consensus.md "Bonds"): a result counts only from a
    # key whose bond of at least ``min_bond`` was registered ``bond_maturity``
    # blocks or more before the task's seed block; an unbond releases the
    # bond ``unbond_delay`` blocks after the block that includes it.
    min_bond: int = 1_000_000
    bond_maturity: int = 100
    unbond_delay: int = 100
    min_bond_fee: int = 1_000  # bond and unbond transactions, each
    # A result pays at least this to the miner that includes it.
    min_result_fee: int = 1_000
    # A task's payout (bounty, refund) is credited this many blocks after it
    # closes: the window in which its results can still be disputed.
    payout_window: int = 100
    # Disputes (docs/consensus.md "Disputes"): a challenge is resolved
    # ``dispute_delay`` blocks after the block that includes it (every node
    # re-runs the result's full audit by then); at most
    # ``max_challenges_per_block`` challenges per block bound that work.
    # A voided result's trainer loses its whole bond, ``challenge_slash_share``
    # of it (floor, IEEE-754 double product) to the challenger, the rest
    # burned; a wrong challenge burns ``challenge_stake`` of the challenger's
    # bond (each open challenge reserves that much of it).
    dispute_delay: int = 10
    max_challenges_per_block: int = 4
    challenge_slash_share: float = 0.5
    challenge_stake: int = 1_000_000
    min_challenge_fee: int = 1_000
    allocations: tuple[tuple[bytes, int, int], ...] = ()
    # Headers of a branch enter the index only once its cumulative work reaches
    # max(min_chain_work, our tip's work): see docs/consensus.md "Headers pre-sync".
    min_chain_work: int = 0
    genesis_message: bytes = b"p2pml genesis"
    genesis: Block = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.payout_window < 1 or self.unbond_delay < 1 or self.bond_maturity < 0:
            raise ValueError("payout_window and unbond_delay must be >= 1, bond_maturity >= 0")
        # A challenge accepted while its task is open must resolve no later
        # than the payout (the earliest payout is payout_window after it).
        if not 1 <= self.dispute_delay <= self.payout_window:
            raise ValueError("dispute_delay must be in 1..payout_window")
        if not 0.0 <= self.challenge_slash_share <= 1.0 or self.max_challenges_per_block < 1:
            raise ValueError("challenge_slash_share in [0, 1], max_challenges_per_block >= 1")
        if not 1 <= self.challenge_stake <= self.min_bond:
            raise ValueError("challenge_stake must be in 1..min_bond")
        if self.audit_delay < 1 or self.attest_window < 1 or self.committee_size < 1:
            raise ValueError("audit_delay, attest_window and committee_size must be >= 1")
        if not 0.0 <= self.attest_fee_share <= 1.0:
            raise ValueError("attest_fee_share must be in [0, 1]")
        # A failing attestation opens a dispute, which must resolve before its
        # task is paid (a result may be included in the block that closes its
        # task, whose payout is payout_window later).
        if self.audit_delay + self.attest_window + self.dispute_delay > self.payout_window:
            raise ValueError("audit_delay + attest_window + dispute_delay must be <= payout_window")
        object.__setattr__(self, "genesis", _build_genesis(self))

    @property
    def pow_limit(self) -> int:
        return bits_to_target(self.pow_limit_bits)

    @property
    def genesis_hash(self) -> bytes:
        return self.genesis.hash

    @property
    def intended_timespan(self) -> int:
        # The window spans (window - 1) intervals between its first and last block.
        return (self.retarget_window - 1) * self.target_spacing


def _genesis_coinbase(p: NetworkParams) -> Coinbase:
    return Coinbase(height=0, miner=GENESIS_MINER, amount=0, extra=p.genesis_message)


def _build_genesis(p: NetworkParams) -> Block:
    txs: tuple[Transaction, ...] = (
        _genesis_coinbase(p),
        *(Allocation(pubkey=k, amount=a, bond=b) for k, a, b in p.allocations),
    )
    header = BlockHeader(
        version=BLOCK_VERSION,
        height=0,
        prev_hash=ZERO_HASH,
        tx_root=merkle_root([tx_id(t) for t in txs]),
        time=p.genesis_time,
        bits=p.pow_limit_bits,
        nonce=p.genesis_nonce,
    )
    return with_raw(Block(header, txs))


def mine_genesis_nonce(p: NetworkParams) -> int:
    """Used once to pick ``genesis_nonce``; tests check genesis PoW holds."""
    target = p.pow_limit
    g = p.genesis.header
    nonce = 0
    while True:
        h = BlockHeader(g.version, 0, g.prev_hash, g.tx_root, g.time, g.bits, nonce)
        if check_pow(h.hash, target):
            return nonce
        nonce += 1


DEV_MIN_BOND = 1_000_000
GENESIS_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z

# The runtime every network's verdicts are defined by (pinned in
# pyproject.toml; a release that changes them is a consensus change).
# dp-accounting decides whether a DP federated task is valid (its epsilon
# against the budget) and the epsilon recorded per round (protocol 6).
RUNTIME = (("dp-accounting", "0.6.0"), ("numpy", "2.4.6"), ("scikit-learn", "1.9.1"))

# Main: one day of blocks (1,440 at 60 s) at the genesis difficulty. A fresh
# node stores no header of a branch lighter than that, so a stranger cannot
# fill its index with headers mined where work is cheapest. Raise it with
# releases, as the chain's real work grows (Bitcoin Core's nMinimumChainWork).
MAIN_MIN_CHAIN_BLOCKS = 1_440
_MAIN_POW_LIMIT_BITS = target_to_bits((1 << 240) - 1)

MAIN = NetworkParams(
    name="main",
    genesis_time=GENESIS_TIME,
    genesis_nonce=8_661,
    pow_limit_bits=_MAIN_POW_LIMIT_BITS,
    target_spacing=60,
    retarget_window=720,
    no_retarget=False,
    max_block_bytes=1_000_000,
    max_block_txs=5_000,
    max_future_seconds=2 * 60 * 60,
    coinbase_reward=50_000_000,
    audit_fraction=0.1,
    min_round_bounty=100_000,
    min_chain_work=MAIN_MIN_CHAIN_BLOCKS * block_work(bits_to_target(_MAIN_POW_LIMIT_BITS)),
    timewarp_seconds=10 * 60,
    runtime=RUNTIME,
    # A bond of 1/5 of a block reward, mature after ~100 minutes; payouts
    # after the same, and an unbond waits a day of blocks.
    min_bond=10_000_000,
    bond_maturity=100,
    payout_window=100,
    unbond_delay=1_440,
    # Ten minutes to re-run one result everywhere; a wrong challenge costs
    # the minimum bond.
    dispute_delay=10,
    max_challenges_per_block=4,
    challenge_slash_share=0.5,
    challenge_stake=10_000_000,
    # The beacon six blocks (~6 minutes) after inclusion; committees of
    # three attest within half an hour, well inside the payout window.
    audit_delay=6,
    committee_size=3,
    attest_window=30,
    attest_fee_share=0.5,
)

DEVNET = NetworkParams(
    name="devnet",
    genesis_time=GENESIS_TIME,
    genesis_nonce=1_587_323,
    pow_limit_bits=target_to_bits((1 << 236) - 1),
    target_spacing=5,
    retarget_window=24,
    no_retarget=False,
    max_block_bytes=1_000_000,
    max_block_txs=5_000,
    max_future_seconds=2 * 60 * 60,
    coinbase_reward=50_000_000,
    allocations=dev_allocations(bond=DEV_MIN_BOND),
    min_round_bounty=1_000,
    timewarp_seconds=10 * 5,
    runtime=RUNTIME,
    # Seconds, not hours: a dev network's tasks pay out within a minute.
    min_bond=DEV_MIN_BOND,
    bond_maturity=2,
    payout_window=8,
    unbond_delay=12,
    dispute_delay=3,
    max_challenges_per_block=4,
    challenge_slash_share=0.5,
    challenge_stake=DEV_MIN_BOND,
    audit_delay=1,
    committee_size=3,
    attest_window=4,
    attest_fee_share=0.5,
)

REGTEST = NetworkParams(
    name="regtest",
    genesis_time=GENESIS_TIME,
    genesis_nonce=1,
    pow_limit_bits=0x207FFFFF,
    target_spacing=1,
    retarget_window=144,
    no_retarget=True,
    max_block_bytes=1_000_000,
    max_block_txs=5_000,
    max_future_seconds=2 * 60 * 60,
    coinbase_reward=50_000_000,
    allocations=dev_allocations(bond=DEV_MIN_BOND),
    timewarp_seconds=10 * 1,
    runtime=RUNTIME,
    # Small so functional tests stay fast: a bond counts from the next
    # block, a payout six blocks after close (room for the beacon one block
    # after inclusion, three blocks of attestations and a failing one's
    # two-block dispute).
    min_bond=DEV_MIN_BOND,
    bond_maturity=1,
    payout_window=6,
    unbond_delay=3,
    dispute_delay=2,
    max_challenges_per_block=4,
    challenge_slash_share=0.5,
    challenge_stake=DEV_MIN_BOND,
    audit_delay=1,
    committee_size=3,
    attest_window=3,
    attest_fee_share=0.5,
)

NETWORKS: dict[str, NetworkParams] = {p.name: p for p in (MAIN, DEVNET, REGTEST)}


def params_for(name: str) -> NetworkParams:
    try:
        return NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r} (known: {', '.join(NETWORKS)})") from None
