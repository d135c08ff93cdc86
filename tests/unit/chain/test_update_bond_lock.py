"""An included federated update locks its participant's bond until the task's
payout, as a result does (protocol 7, docs/consensus.md "Bonds"), so a
participant cannot unbond out of a later slash; a reorg undoes the lock."""

from __future__ import annotations

import dataclasses

from p2pml.chain.bonds import lock_key
from p2pml.chain.params import REGTEST
from p2pml.chain.tasks import task_key
from p2pml.chain.types import RoundCloseTx, UnbondTx
from p2pml.crypto import Identity
from tests.framework.chainbuilder import Node
from tests.unit.chain.test_chain_federated import (
    FED,
    P1,
    P2,
    P3,
    SPEC,
    WIRE,
    W,
    expected_hash,
    fed_task,
    mine,
    rounds,
    setup,
    update,
)


def unbond(who: Identity, nonce: int = 1) -> UnbondTx:
    return UnbondTx(who.public_key, REGTEST.min_bond_fee, nonce).signed_by(
        who, REGTEST.genesis_hash
    )


def test_an_update_locks_its_bond_until_the_task_is_paid() -> None:
    b, n, o = setup()
    t = fed_task()
    b1 = mine(b, n, b.genesis, t)
    u1, u2 = update(o, t, b1.hash, P1, 0, 1.0), update(o, t, b1.hash, P2, 0, 2.0)
    h1, _ = expected_hash(rounds.initial(WIRE, b1.hash), (P1, 1.0, 10), (P2, 2.0, 10))
    b2 = mine(b, n, b1.hash, u1, u2, RoundCloseTx(t.id, 0, h1))
    assert n.chain.state[lock_key(P1.public_key)] == [t.id]
    blk = b.make(b2.hash, txs=(unbond(P1),), register=False)
    assert n.feed(blk).rejected == [(blk.hash, "bond-locked")]
    # P3 sent nothing: its bond is free (the same unbond is valid for it).
    tip = mine(b, n, b2.hash, unbond(P3))
    # Round 1 runs out empty; its close closes the task; paid W blocks later.
    for _ in range(2):
        tip = mine(b, n, tip.hash)
    tip = mine(b, n, tip.hash, RoundCloseTx(t.id, 1, h1))
    rec = n.chain.state[task_key(t.id)]
    assert not rec["open"] and rec["payout_at"] == tip.height + W
    for _ in range(W - 1):
        tip = mine(b, n, tip.hash)
    blk = b.make(tip.hash, txs=(unbond(P1),), register=False)
    assert n.feed(blk).rejected == [(blk.hash, "bond-locked")]  # one block before the payout
    tip = mine(b, n, tip.hash)
    assert n.chain.state[task_key(t.id)]["paid"]
    assert lock_key(P1.public_key) not in n.chain.state
    mine(b, n, tip.hash, unbond(P1), unbond(P2))


def test_an_update_of_a_round_open_at_the_deadline_is_unlocked_at_payout() -> None:
    b, n, o = setup()
    short = dataclasses.replace(SPEC, federated=dataclasses.replace(FED, round_blocks=1))
    t = fed_task(deadline=4, spec=short)
    b1 = mine(b, n, b.genesis, t)
    u1, u2 = update(o, t, b1.hash, P1, 0, 1.0), update(o, t, b1.hash, P2, 0, 2.0)
    h1, _ = expected_hash(rounds.initial(WIRE, b1.hash), (P1, 1.0, 10), (P2, 2.0, 10))
    b2 = mine(b, n, b1.hash, u1, u2, RoundCloseTx(t.id, 0, h1))
    b3 = mine(b, n, b2.hash, update(o, t, b1.hash, P3, 1, 3.0, base=h1))
    tip = mine(b, n, mine(b, n, b3.hash).hash)  # deadline: round 1 never closed
    rec = n.chain.state[task_key(t.id)]
    assert not rec["open"] and n.chain.state[lock_key(P3.public_key)] == [t.id]
    for _ in range(rec["payout_at"] - tip.height):
        tip = mine(b, n, tip.hash)
    assert lock_key(P3.public_key) not in n.chain.state
    mine(b, n, tip.hash, unbond(P3))


def test_a_reorg_undoes_and_redoes_the_lock_exactly() -> None:
    b, n, o = setup()
    t = fed_task()
    b1 = mine(b, n, b.genesis, t)
    u1 = update(o, t, b1.hash, P1, 0, 1.0)
    a2 = mine(b, n, b1.hash, u1)
    assert n.chain.state[lock_key(P1.public_key)] == [t.id]
    # A longer branch without the update: the lock is gone, P1 may unbond.
    other = b"\x55" * 32
    c2 = b.make(b1.hash, miner=other)
    c3 = b.make(c2.hash, miner=other)
    n.feed(c2).raise_error()
    n.feed(c3).raise_error()
    assert n.tip == c3.hash
    assert lock_key(P1.public_key) not in n.chain.state
    replay = Node()
    replay.chain.verdicts = o
    replay.feed_all([b.blocks[b1.hash], c2, c3])
    assert replay.chain.state == n.chain.state
    # And back: a branch on a2 wins again, the lock with it.
    a3 = b.make(a2.hash)
    a4 = b.make(a3.hash)
    n.feed(a3).raise_error()
    n.feed(a4).raise_error()
    assert n.tip == a4.hash and n.chain.state[lock_key(P1.public_key)] == [t.id]
    again = Node()
    again.chain.verdicts = o
    again.feed_all([b.blocks[h] for h in (b1.hash, a2.hash, a3.hash, a4.hash)])
    assert again.chain.state == n.chain.state
