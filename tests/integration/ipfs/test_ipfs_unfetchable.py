"""Attack 5 of issue 14, its IPFS half: results naming artifact CIDs nobody has.

Before: each such fetch held a fetch slot for the whole ``ipfs.timeout``
(60 s by default), then killed and restarted the embedded Kubo node, and the
result stayed "pending" with no cost to its sender. Now a fetch with no
first block by ``ipfs.fetch_start_timeout`` gives up without a restart (the
download is abandoned in the node), the CID is refused at once for
``ipfs.unfetchable_ttl``, and the sender pays with its check budget, while
honest fetches in parallel go through.

Real parts: two embedded Kubo nodes on loopback, the real store, Verifier and
VerificationService; the result checker (the model re-run) and the chain are
fakes, because what is under attack is the fetch, not the model.
"""

from __future__ import annotations

import os
import time

import pytest

from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import ResultTx
from p2pml.errors import MissingDataError, NoProvider, ValidationError
from p2pml.ipfs import embedded as embedded_mod
from p2pml.ipfs import embedded_swarm_addrs
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ipfs.embedded import DOWNLOADS_DIR
from p2pml.ml.verify import ResultClaim
from p2pml.node.verification import (
    PEER_CHECK_BURST_SECONDS,
    UNFETCHABLE_ARTIFACT_SECONDS,
    VerificationService,
)
from p2pml.node.verifier import Request, Verifier
from tests.framework.hostile_peer import unfetchable_cid
from tests.framework.ipfs_daemon import JsIpfsDaemon
from tests.framework.waiting import scaled
from tests.integration.ipfs.conftest import EmbeddedFactory, SidecarFactory, embedded_backend
from tests.unit.node.fakes import FakeChain, FakeGossip, FakeRelay, Jobs

START_TIMEOUT = 1.0
TOTAL_TIMEOUT = 30.0  # what each bogus CID used to cost
TRAINER = dev_identity(6)
SPEC = TaskSpec(
    dataset_cid=cid_of_bytes(b"dataset"),
    target="y",
    model="ridge",
    kind="regression",
    metric="r2",
    rounds=64,
)
TASK_ID, SEED = b"t" * 32, b"s" * 32


class RecordingChecker:
    """Accepts every model it is given (what is under test is getting it)."""

    def __init__(self) -> None:
        self.artifacts: list[bytes] = []

    async def verify(self, claim: ResultClaim, background: bool = False) -> None:
        self.artifacts.append(claim.artifact)


class Admission:
    """What TaskService.submit_result does for a result not verified yet."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    async def submit_result(
        self, tx: ResultTx, source: str, verify: bool = True, background: bool = False
    ) -> None:
        verdict = await self.verifier.check(Request(tx, SPEC.to_wire(), SEED, True), background)
        if verdict is None:
            raise MissingDataError(tx.model_cid)
        if verdict:
            raise ValidationError(verdict, "false")


def result(rnd: int, model_cid: str) -> ResultTx:
    return ResultTx(TASK_ID, SEED, rnd, TRAINER.public_key, 0.5, model_cid, 10, 1, 1_000).signed_by(
        TRAINER, REGTEST.genesis_hash
    )


async def test_results_naming_unfetchable_artifacts_are_cheap_and_cost_their_sender(
    make_embedded: EmbeddedFactory,
) -> None:
    a = await make_embedded("a", timeout=TOTAL_TIMEOUT)
    b = await make_embedded(
        "b",
        peers=tuple(embedded_swarm_addrs(a)),
        timeout=TOTAL_TIMEOUT,
        fetch_start_timeout=START_TIMEOUT,
        unfetchable_ttl=600.0,
    )
    kb = embedded_backend(b)
    pid = kb.pid
    honest_models = [await a.add_bytes(os.urandom(64 * 1024)) for _ in range(2)]
    honest_data = os.urandom(1024**2)
    honest_dataset = await a.add_bytes(honest_data)

    checker = RecordingChecker()
    verifier = Verifier(b, checker, parallel=2)
    gossip, relay, jobs = FakeGossip(), FakeRelay(), Jobs()
    svc = VerificationService(FakeChain(), verifier, Admission(verifier), relay, gossip, jobs)

    bogus = [result(r, unfetchable_cid()) for r in range(8)]
    honest = [result(100 + i, cid) for i, cid in enumerate(honest_models)]
    t0 = time.monotonic()
    for tx in bogus:
        assert svc.check_gossiped_result(tx, "evil")
    for tx in honest:
        assert svc.check_gossiped_result(tx, "honest")
    # An honest fetch in parallel with the attack (a dataset for training).
    fetched = await b.fetch(honest_dataset)
    honest_fetch_seconds = time.monotonic() - t0
    assert fetched.read_bytes() == honest_data
    await jobs.settle()
    elapsed = time.monotonic() - t0

    # No restart of the embedded node: the downloads were abandoned in it.
    assert kb.pid == pid and kb.kills == 0 and kb.spawns == 1
    assert kb.abandoned_total == len(bogus)
    # Each bogus fetch held its slot for about the start timeout, not
    # ipfs.timeout: 8 of them on 2 slots, so ~4 s (the old code: 4 x 30 s).
    assert elapsed < scaled(4 * START_TIMEOUT + 8), elapsed
    assert honest_fetch_seconds < scaled(8), honest_fetch_seconds
    assert b.stats["no_provider"] == len(bogus)
    assert verifier.stats.unfetchable == len(bogus)
    # The honest results went through; the sender of the bogus ones paid.
    assert sorted(checker.artifacts) == sorted(
        [(await b.fetch(c)).read_bytes() for c in honest_models]
    )
    assert sorted(relay.sent, key=lambda tx: tx.round) == honest
    assert svc.counts["unfetchable"] == len(bogus)
    assert svc.budget.balance("evil") < 0 < svc.budget.balance("honest")
    assert not svc.check_gossiped_result(result(50, unfetchable_cid()), "evil")
    assert svc.counts["refused-budget"] == 1
    # The same CID again, from someone else: refused at once, and still charged.
    t1 = time.monotonic()
    assert svc.check_gossiped_result(result(60, bogus[0].model_cid), "copycat")
    await jobs.settle()
    assert time.monotonic() - t1 < scaled(START_TIMEOUT)
    assert b.stats["unfetchable_refused"] >= 1 and kb.abandoned_total == len(bogus)
    assert svc.counts["unfetchable"] == len(bogus) + 1
    # Charged the 30 s (less what refilled since: a fraction of a second).
    charged = PEER_CHECK_BURST_SECONDS - svc.budget.balance("copycat")
    assert charged > UNFETCHABLE_ARTIFACT_SECONDS - 1
    assert gossip.penalties == []  # no score: unavailability proves nothing


async def test_a_missing_cid_is_abandoned_not_restarted_and_the_node_still_serves(
    make_embedded: EmbeddedFactory,
) -> None:
    store = await make_embedded("n", timeout=30.0, fetch_start_timeout=0.5)
    kb = embedded_backend(store)
    pid = kb.pid
    t0 = time.monotonic()
    with pytest.raises(NoProvider, match="fetch_start_timeout"):
        await store.fetch(cid_of_bytes(b"nobody has this"))
    assert time.monotonic() - t0 < scaled(3)
    assert list(store.cache.tmp.iterdir()) == []
    # Its FIFO was replaced by a directory: a late answer from Kubo cannot land.
    assert [p.is_dir() for p in (kb.repo_dir / DOWNLOADS_DIR).iterdir()] == [True]
    assert kb.pid == pid and kb.kills == 0
    cid = await store.add_bytes(b"still works")
    assert (await store.fetch(cid)).read_bytes() == b"still works"


async def test_abandoned_downloads_are_bounded_per_node_process(
    make_embedded: EmbeddedFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_mod, "MAX_ABANDONED", 2)
    store = await make_embedded("n", timeout=30.0, fetch_start_timeout=0.3)
    kb = embedded_backend(store)
    first = kb.pid
    for i in range(2):
        with pytest.raises(NoProvider):
            await store.fetch(unfetchable_cid())
        assert kb.pid == first, i
    with pytest.raises(NoProvider):
        await store.fetch(unfetchable_cid())  # past the bound: the node is restarted
    assert kb.kills == 1 and kb.pid is None
    cid = await store.add_bytes(b"after the restart")  # a new process, same repo
    assert kb.pid not in (None, first) and kb.spawns == 2
    assert (await store.fetch(cid)).read_bytes() == b"after the restart"
    assert list((kb.repo_dir / DOWNLOADS_DIR).iterdir()) == []  # emptied at the respawn


async def test_sidecar_gives_up_at_the_start_deadline_and_the_daemon_still_serves(
    shared_jsipfs: JsIpfsDaemon, make_sidecar: SidecarFactory
) -> None:
    store = await make_sidecar(shared_jsipfs, timeout=30.0, fetch_start_timeout=START_TIMEOUT)
    t0 = time.monotonic()
    with pytest.raises(NoProvider):
        await store.fetch(unfetchable_cid())
    assert time.monotonic() - t0 < scaled(START_TIMEOUT + 2)
    # Closing the request cancelled it; the daemon goes on serving.
    cid = await store.add_bytes(b"served after")
    assert (await store.fetch(cid)).read_bytes() == b"served after"
