"""BondService against fakes of its ports (real consensus underneath): the
automatic bond of a training node, bonds and unbonds sent and gossiped."""

from __future__ import annotations

from p2pml.chain.bonds import bond_key
from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.types import BondTx, TransferTx
from p2pml.crypto import Identity
from p2pml.net.backend import Verdict
from p2pml.node.bonds import BondService
from p2pml.node.gossip import GossipHandler
from p2pml.node.mempool import Mempool
from p2pml.node.relay import Relay
from p2pml.node.tasks import TaskService
from p2pml.node.transfers import TransferService
from p2pml.node.verification import VerificationService
from tests.framework.chainbuilder import Builder
from tests.unit.node.fakes import FakeChain, FakeGossip, FakeRelay, FakeResults, Jobs
from tests.unit.node.test_services import _Verdicts, _Verifier

PUB = dev_identity(0)
NEW = Identity.from_seed(b"\x42" * 32)  # not in genesis


def service(
    chain: FakeChain, who: Identity, jobs: Jobs, auto: bool = True
) -> tuple[BondService, Mempool, FakeGossip]:
    pool, gossip = Mempool(REGTEST), FakeGossip()
    svc = BondService(
        who, chain, pool, _Verdicts(), Relay(chain, gossip), lambda: None, jobs, auto_bond=auto
    )
    return svc, pool, gossip


async def test_a_new_key_bonds_itself_at_the_first_tip_where_it_has_the_coins() -> None:
    chain, jobs = FakeChain(), Jobs()
    svc, pool, gossip = service(chain, NEW, jobs)
    svc.start()
    await jobs.settle()
    assert len(pool) == 0 and not svc.needs_bond()  # no coins yet
    b = Builder()
    fund = TransferTx(PUB.public_key, NEW.public_key, 2 * REGTEST.min_bond, 1_000, 1).signed_by(
        PUB, REGTEST.genesis_hash
    )
    blk = b.make(b.genesis, txs=(fund,))
    (await chain.submit_block(blk)).raise_error()
    await jobs.settle()
    (bond,) = pool.txs.values()
    assert isinstance(bond, BondTx) and bond.trainer == NEW.public_key
    assert bond.amount == REGTEST.min_bond and bond.fee == REGTEST.min_bond_fee
    assert gossip.published == [("bonds", encode_tx(bond))]
    # Pooled: no second bond at the next tip, nor once it is in the chain.
    blk2 = b.make(blk.hash)
    (await chain.submit_block(blk2)).raise_error()
    await jobs.settle()
    assert len(pool) == 1
    (await chain.submit_block(b.make(blk2.hash, txs=(bond,)))).raise_error()
    await jobs.settle()
    assert chain.chain.state[bond_key(NEW.public_key)]["amount"] == REGTEST.min_bond
    assert not svc.needs_bond() and len(gossip.published) == 1


async def test_without_auto_bond_nothing_is_sent_and_a_dev_key_is_bonded_already() -> None:
    chain, jobs = FakeChain(), Jobs()
    off, pool, _ = service(chain, PUB, jobs, auto=False)
    off.start()
    await jobs.settle()
    assert len(pool) == 0
    assert not off.needs_bond()  # bonded in the regtest genesis


async def test_gossiped_bonds_are_pooled_or_refused_with_their_reasons() -> None:
    chain, jobs = FakeChain(), Jobs()
    svc, pool, gossip = service(chain, PUB, jobs, auto=False)
    relay = Relay(chain, gossip)
    tasks = TaskService(PUB, chain, pool, _Verdicts(), relay, lambda: None)
    verification = VerificationService(chain, _Verifier(), FakeResults(), FakeRelay(), gossip, jobs)
    transfers = TransferService(PUB, chain, pool, _Verdicts(), relay, lambda: None)
    h = GossipHandler(chain, tasks, verification, relay, gossip, transfers, bonds=svc)  # type: ignore[arg-type]
    b = Builder()
    fund = TransferTx(PUB.public_key, NEW.public_key, 2 * REGTEST.min_bond, 1_000, 1).signed_by(
        PUB, REGTEST.genesis_hash
    )
    (await chain.submit_block(b.make(b.genesis, txs=(fund,)))).raise_error()
    good = BondTx(NEW.public_key, REGTEST.min_bond, 1_000, 1).signed_by(NEW, REGTEST.genesis_hash)
    assert await h.on_gossip("bonds", good, "peerA") is Verdict.ACCEPT
    assert good.id in pool
    # A dev key is bonded already: a race with a block the sender has not seen.
    again = BondTx(PUB.public_key, REGTEST.min_bond, 1_000, 1).signed_by(PUB, REGTEST.genesis_hash)
    assert await h.on_gossip("bonds", again, "peerA") is Verdict.IGNORE
    small = BondTx(NEW.public_key, 1, 1_000, 2).signed_by(NEW, REGTEST.genesis_hash)
    assert await h.on_gossip("bonds", small, "peerA") is Verdict.REJECT  # bad-bond-amount
    assert await h.on_gossip("transfers", good, "peerA") is Verdict.REJECT  # wrong topic
    assert list(pool.txs) == [good.id]
