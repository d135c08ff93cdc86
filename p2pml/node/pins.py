"""PinService: keeps pinned in IPFS what the chain says this node still needs.

The embedded node's GC (``ipfs.storage_max_mb``, :mod:`p2pml.ipfs.repogc`)
and a sidecar's own GC drop only unpinned content. What stays pinned is
derived from the active chain's state alone, so a restart or a reorg ends in
the same pins with no ledger of our own (retention rule, ``N`` =
``ipfs.pin_retention_blocks``):

* a task's dataset: until ``N`` blocks after the task is paid (every node
  verifies the task's results in blocks, a dispute's full audit re-trains
  on it on every node until the payout height, and a shallow reorg may
  undo the payout); for ever if this node published the task (it is the
  source);
* the model artifact of every result in the chain, whoever trained it, and
  every update artifact of a federated task: until ``N`` blocks after the
  task is paid. A dispute (challenge, failing attestation) may be opened
  until the payout height, and its resolution makes every node re-run the
  result's full audit; a federated round close and a restart's recomputation
  of the global models need the updates. A trainer that stops serving its
  artifact after inclusion therefore cannot stall a dispute: every
  validator fetched it for the cheap checks and keeps it pinned. (The global
  models a node computes are derived from the updates and recomputed after
  a restart, docs/federated.md §11.6, so the updates are what is pinned.)

Pins are added only for content already here (``has``): pinning asks IPFS to
fetch whatever is missing, which for a CID nobody serves never ends. Releases
cover only CIDs the chain names (datasets of closed tasks, our own artifacts),
and what this process pinned that the chain no longer names (its task was
reorged away; after a restart such a pin is not known and stays), never
anything else in the repo. A result of ours that never made it into the
chain keeps the pin its ``add`` made.

It reconciles at start, after every tip change (a reorg re-pins), and every
``RECHECK_SECONDS`` (a dataset fetched between blocks gets its pin).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from p2pml.chain.index import ChainUpdate
from p2pml.errors import DaemonUnavailable, DatasetError
from p2pml.node.pin_records import PinRecords, artifact_cids, needed, owning_task
from p2pml.node.ports import ChainAccess, PinStore

log = logging.getLogger(__name__)

RECHECK_SECONDS = 30.0
CALL_TIMEOUT = 30.0  # one pin/unpin call; a stuck daemon must not stall the rest


@dataclass(frozen=True)
class PinPlan:
    keep: frozenset[str]  # CIDs to have pinned
    release: frozenset[str]  # CIDs the chain names that no longer need a pin


def plan_pins(state: Mapping[bytes, Any], height: int, me: bytes, retention: int) -> PinPlan:
    """What should be pinned at chain ``height`` (pure: a function of the state)."""
    keep: set[str] = set()
    named: set[str] = set()
    for key, rec in state.items():
        if key.startswith(b"task:"):
            cid = str(rec["spec"]["dataset_cid"])
            named.add(cid)
            if needed(rec, height, retention) or bytes(rec["publisher"]) == me:
                keep.add(cid)
            continue
        owner = owning_task(key, rec)
        if owner is None:
            continue
        cids = artifact_cids(key, rec)
        named.update(cids)
        task = state.get(owner)
        if task is not None and needed(task, height, retention):
            keep.update(cids)
    return PinPlan(frozenset(keep), frozenset(named - keep))


class PinService:
    def __init__(
        self,
        chain: ChainAccess,
        store: PinStore,
        me: bytes,
        retention_blocks: int,
        call_timeout: float = CALL_TIMEOUT,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self._chain = chain
        self._store = store
        self._me = me
        self.retention = retention_blocks
        self._call_timeout = call_timeout
        self._recheck = recheck_seconds
        # What this process pinned / released: each is done once, not at every
        # tip (both calls are idempotent, so a restart simply does them again).
        self.pinned: set[str] = set()
        self.released: set[str] = set()
        self._wake = asyncio.Event()
        self._wake.set()  # reconcile at start
        #: for /metrics: pinned and released by this process, passes done
        self.stats = {"held": 0, "released": 0, "passes": 0}
        self.live = PinRecords(me, retention_blocks)
        chain.on_tip_changed(self._on_tip)

    def _on_tip(self, update: ChainUpdate) -> None:
        self.live.note(update)
        self._wake.set()

    async def run(self) -> None:
        """Reconcile on every wake-up (a supervisor task)."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._recheck)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:  # a bug must not take the node down
                log.exception("pin reconciliation failed")

    async def reconcile(self) -> PinPlan:
        chain = self._chain.chain
        height = chain.height
        plan = plan_pins(self.live.view(chain.state), height, self._me, self.retention)
        for cid in sorted(plan.keep - self.pinned):
            if await self._do("pin", cid):
                self.pinned.add(cid)
                self.released.discard(cid)
        # Also what we pinned that the chain no longer names (a reorg took its task away).
        for cid in sorted((plan.release | (self.pinned - plan.keep)) - self.released):
            if await self._do("unpin", cid):
                self.released.add(cid)
                self.pinned.discard(cid)
        self.live.prune(height, self.released, plan.keep)
        self.stats.update(held=len(self.pinned), released=len(self.released))
        self.stats["passes"] += 1
        return plan

    async def _do(self, op: str, cid: str) -> bool:
        """One call; True once it needs no retry (an unpin refused because
        nothing was pinned counts as done)."""
        try:
            async with asyncio.timeout(self._call_timeout):
                if op == "pin":
                    if not await self._store.has(cid):
                        return False  # not fetched yet: pinned on a later pass
                    await self._store.pin(cid)
                else:
                    await self._store.unpin(cid)
        except (DaemonUnavailable, TimeoutError) as exc:
            log.info("%s %s: %s; retried on a later pass", op, cid, exc)
            return False
        except DatasetError as exc:
            log.debug("%s %s: %s", op, cid, exc)
            return op == "unpin"
        log.debug("%sned %s", op, cid)
        return True
