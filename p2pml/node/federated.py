"""FederatedService: this node's part in federated tasks (docs/federated.md §11.6).

When round r of a federated task is open and has room, it trains from G_r
on this node's chain-seeded shard, adds the update to IPFS, checks, pools and
publishes the UpdateTx; it admits peers' updates from gossip; it computes
G_{r+1} as soon as a round is due and gives the miner the round-close
transactions; and it shows rounds, global models and refusals to the API.
The verdicts come from :class:`~p2pml.node.federated_verifier.FederatedVerifier`.

A peer's update for a round that has not opened here yet (we lack the block
closing the round before: ``bad-update-round``), or whose task's block we
lack (``update-task-unknown``), is held in a bounded buffer
(:class:`UpdateWaits`) and tried again at each new tip: pooled, checked and
relayed once its round opens. Dropped, it would never come again (gossip
delivers a message once), and in a sparse network never reach a miner.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from p2pml.chain.bonds import require_bond
from p2pml.chain.federated_rounds import RoundCloseHandler, fed_key, round_due, round_shares
from p2pml.chain.index import ChainUpdate
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.tasks import task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import PoolTx, RoundCloseTx, Transaction, UpdateTx
from p2pml.config import FederatedSettings, TrainingSettings
from p2pml.crypto import Identity
from p2pml.errors import (
    DatasetError,
    MissingDataError,
    P2PMLError,
    TrainingError,
    ValidationError,
)
from p2pml.ml.fedjobs import FedDescribeRequest, FedTrainRequest
from p2pml.ml.jobpool import JobPool
from p2pml.ml.scheduling import Priority
from p2pml.node.budget import PeerBudget
from p2pml.node.chain_waits import ChainWaits
from p2pml.node.federated_verifier import FederatedVerifier, UpdateCheck, close_check
from p2pml.node.mempool import Mempool
from p2pml.node.ports import ChainAccess, Gossip, Spawn, TxRelay
from p2pml.node.verification import (
    CHECK_RESERVE_SECONDS,
    FALSE_RESULT_PENALTY,
    HARMLESS,
    PEER_CHECK_BURST_SECONDS,
    PEER_CHECK_SECONDS_PER_SECOND,
)

log = logging.getLogger(__name__)

FED_PREFIX = b"fed:"
#: Refusals of a peer's update that a later tip may lift: it is held.
EARLY = frozenset({"bad-update-round", "update-task-unknown"})
#: An update whose task's block we lack is held this many blocks at most (the
#: task's block is in flight, or waits here for its data).
UNKNOWN_TASK_BLOCKS = 10
#: Gossiped updates whose artifacts are fetched and checked at once (more wait
#: for a peer to relay them again).
MAX_GOSSIPED_CHECKS = 64
#: Events kept per task for the API (the newest): peers' updates refused or
#: held are noted too, and a bonded peer can make many.
EVENTS_MAX = 1_000
#: What POST /tasks fills in when a federated body leaves it out.
FEDERATED_DEFAULTS: dict[str, Any] = {
    "aggregation": "fedavg",
    "local_epochs": 1,
    "participants": 5,
    "round_blocks": 10,
    "private": "",
    "validation": "",
    "reward": "samples",
    "clip": 0.0,
    "trim": 0,
    "noise_multiplier": 0.0,
    "sampling_rate": 1.0,
    "delta": 0.0,
    "epsilon": 0.0,
}


class UpdateWaits(ChainWaits[UpdateTx]):
    """Early updates; one per (participant, task, round): later variants are ignored."""

    def key(self, tx: UpdateTx) -> tuple[bytes, bytes, int]:
        return (tx.participant, tx.task_id, tx.round)

    def signer(self, tx: UpdateTx) -> bytes:
        return tx.participant


def _start_of(fed: Mapping[str, Any]) -> bytes:
    """The committed hash of G_r, the model the open round trains from (b"" for G_0)."""
    return bytes(fed["models"][-1]) if fed["models"] else b""


class FederatedService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainAccess,
        mempool: Mempool,
        verifier: FederatedVerifier,
        relay: TxRelay,
        pool: JobPool,
        settings: TrainingSettings,
        spawn: Spawn,
        on_pool_change: Callable[[], None],
        fed_settings: FederatedSettings | None = None,
        gossip: Gossip | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._identity = identity
        # Gossiped updates are judged like gossiped results (docs/federated.md
        # §11.6): the relay of an update whose artifact check fails is penalised
        # (an honest node relays only what passed), and the worker time of the
        # checks a peer asks for comes out of its budget.
        self._gossip = gossip
        self._clock = clock
        self.budget = PeerBudget(PEER_CHECK_SECONDS_PER_SECOND, PEER_CHECK_BURST_SECONDS, clock)
        if gossip is not None:
            gossip.on_banned(self.budget.forget)
        self._chain = chain
        self._mempool = mempool
        self.verifier = verifier
        self._relay = relay
        self._pool = pool
        self._settings = settings
        self._fed_settings = fed_settings or FederatedSettings()
        self._spawn = spawn
        self._on_pool_change = on_pool_change
        self.enabled = settings.enabled
        self.tasks: set[bytes] = set()  # open federated tasks
        # (task, seed, round, hash of G_r): a reorg that brings another G_r
        # (the rounds before closed differently) calls for a new update.
        self._claimed: set[tuple[bytes, bytes, int, bytes]] = set()
        #: (task, seed, round) -> id of the update this node pooled for it
        self._sent: dict[tuple[bytes, bytes, int], bytes] = {}
        self._computing: set[Any] = set()
        self._checking: set[bytes] = set()  # gossiped updates being checked
        #: task id -> what happened to this node's updates and to peers' gossiped ones
        self.events: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
        #: peers' updates early for their round (or task), tried at each tip
        self.waiting = UpdateWaits()
        verifier.on_new_model = on_pool_change
        chain.on_tip_changed(self._tip_changed)

    def start(self) -> None:
        """At start: every open federated task in the chain state."""
        for key in [k for k in self._chain.chain.state if k.startswith(FED_PREFIX)]:
            self.tasks.add(key[len(FED_PREFIX) :])
        self._advance()

    def _tip_changed(self, update: ChainUpdate) -> None:
        for key in update.state_changes:
            if key.startswith(FED_PREFIX):
                self.tasks.add(key[len(FED_PREFIX) :])
        self._advance()
        self._retry_waiting()

    def _advance(self) -> None:
        state = self._chain.chain.state
        for task_id in list(self.tasks):
            task, fed = state.get(task_key(task_id)), state.get(fed_key(task_id))
            if task is None or fed is None or not task["open"]:
                self.tasks.discard(task_id)
                continue
            if self.enabled:
                self._maybe_train(task_id, task, fed)
            # Due at the next height: compute G_{r+1} now, so the next template
            # (ours or a peer's block) finds it.
            height = self._chain.chain.height + 1
            if (
                fed["round"] < task["spec"]["rounds"]
                and round_due(fed, task["spec"], height)
                and self.verifier.expected_close(task_id, task, fed) is None
            ):
                self._compute_close(task_id, task, fed)

    def _maybe_train(self, task_id: bytes, task: dict[str, Any], fed: dict[str, Any]) -> None:
        me = self._identity.public_key
        seed, rnd = bytes(task["seed"]), int(fed["round"])
        f = task["spec"]["federated"]
        claim = (task_id, seed, rnd, _start_of(fed))
        if claim in self._claimed or rnd >= task["spec"]["rounds"]:
            return
        if (
            any(bytes(u[0]) == me for u in fed["updates"])
            or len(fed["updates"]) >= f["participants"]
        ):
            return
        if self._chain.chain.height + 1 >= fed["opened_at"] + f["round_blocks"]:
            return
        if f["private"] and self._fed_settings.private_file(f["private"]) is None:
            return  # a private task: only nodes holding a file of that name take part
        self._claimed.add(claim)
        self._spawn(self._train(task_id, seed, rnd, claim[3]), "federated-train")

    async def _train(self, task_id: bytes, seed: bytes, rnd: int, start_hash: bytes) -> None:
        state = self._chain.chain.state
        task, fed = state.get(task_key(task_id)), state.get(fed_key(task_id))
        if task is None or fed is None or fed["round"] != rnd or bytes(task["seed"]) != seed:
            return
        if _start_of(fed) != start_hash:
            return
        me = self._identity
        t0 = time.monotonic()
        try:
            spec = TaskSpec.from_wire(task["spec"])
            start = await self.verifier.global_model(task_id, task, fed)
            if start is None:
                raise TrainingError("global-model-unavailable", f"G_{rnd} could not be computed")
            fspec = spec.federated
            private = fspec.private if fspec is not None else ""
            if fspec is not None and fspec.by_improvement:
                # No update before the validation set is here: one nobody serves
                # would hold every close back, and an update sent meanwhile is
                # work the publisher could aggregate without paying for it.
                await self.verifier.score_data(spec)
            if private:
                # Trained from this node's own file: nothing of it is fetched,
                # added to IPFS or sent; only the (noised, under DP) update is.
                path = self._fed_settings.private_file(private)
                if path is None:
                    return
                job = FedTrainRequest(
                    spec,
                    task_id,
                    seed,
                    me.public_key,
                    rnd,
                    start,
                    None,
                    private_file=str(path),
                    max_private_bytes=self._settings.max_dataset_bytes,
                )
            else:
                data = await self.verifier.data(spec)
                job = FedTrainRequest(spec, task_id, seed, me.public_key, rnd, start, data)
            t_job = time.monotonic()
            artifact, n = await self._pool.run(
                "fed_train", job, self._settings.max_job_seconds, Priority.TRAIN
            )
            train_seconds = time.monotonic() - t_job
            cid = await self.verifier.store.add_bytes(artifact)
            tx = UpdateTx(
                task_id=task_id,
                seed=seed,
                round=rnd,
                base=hashlib.sha256(start).digest(),
                participant=me.public_key,
                update_cid=cid,
                n_samples=n,
                fee=self._chain.params.min_result_fee,
            ).signed_by(me, self._chain.params.genesis_hash)
            # Ours from another G_r (before a reorg) names that G_r as its base
            # and is invalid now (update-wrong-base): the pool drops it at the
            # reorg; removing it here too keeps the two from meeting.
            stale = self._sent.get((task_id, seed, rnd))
            if stale is not None and stale != tx.id:
                self._mempool.remove(stale)
            await self.submit(tx, "self")
            self._sent[(task_id, seed, rnd)] = tx.id
        except (P2PMLError, ValidationError) as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            self._note(task_id, rnd, me.public_key, "refused", reason, str(exc))
            log.warning("federated round %d of %s: %s", rnd, task_id.hex()[:16], exc)
            return
        # The local training job's wall time (worker queue included), for the
        # per-round overhead figures (scripts/bench_fed_rounds.py).
        self._note(task_id, rnd, me.public_key, "sent", "", cid, train_seconds)
        log.info(
            "federated round %d of %s: update of %d rows in %.1fs -> %s",
            rnd,
            task_id.hex()[:16],
            n,
            time.monotonic() - t0,
            cid,
        )
        await self._relay.tx(tx)

    def _note(
        self,
        task_id: bytes,
        rnd: int,
        who: bytes,
        what: str,
        reason: str,
        detail: str,
        train_seconds: float | None = None,
    ) -> None:
        events = self.events[task_id]
        if len(events) >= EVENTS_MAX:
            del events[: len(events) - EVENTS_MAX + 1]
        events.append(
            {
                "round": rnd,
                "participant": who.hex(),
                "event": what,
                "reason": reason,
                "detail": detail,
                "time": time.time(),
                "train_seconds": train_seconds,
            }
        )

    async def submit(self, tx: UpdateTx, source: str) -> None:
        """Pool an update once its artifact passed the check; ValidationError with
        the reason if it may not enter. Our own is checked here; a gossiped one
        goes through the cheap rules first (round, duplicate, bond, fee) and, if
        only the artifact check is missing, is checked in the background (at most
        ``MAX_GOSSIPED_CHECKS`` at once), then pooled and relayed by us; the
        caller gets MissingDataError meanwhile."""
        if source == "self":
            await self._check(tx, source)
            self._admit(tx, source)
            return
        try:
            self._admit(tx, source)
        except MissingDataError:
            self._start_check(tx, source)
            raise
        except ValidationError as exc:
            if exc.reason in EARLY:
                self._hold(tx, source, exc.reason)
            raise
        await self._relay.tx(tx)

    def _start_check(self, tx: UpdateTx, source: str) -> bool:
        """Check a gossiped update's artifact in the background, then pool and
        relay it; False if ``MAX_GOSSIPED_CHECKS`` are running already. A
        peer out of its budget of worker seconds gets no check (the update
        may come again, from it later or from another peer)."""
        if tx.id in self._checking:
            return True
        if len(self._checking) >= MAX_GOSSIPED_CHECKS:
            return False
        if not self.budget.allows(source):
            return True
        self._checking.add(tx.id)
        self.budget.charge(source, CHECK_RESERVE_SECONDS)
        if self._spawn(self._check_then_pool(tx, source), "federated-update-check") is None:
            self._checking.discard(tx.id)  # the node is stopping
        return True

    # -- peers' updates early for their round ------------------------------------------

    def _hold(self, tx: UpdateTx, peer: str, reason: str, expires_at: int | None = None) -> None:
        """Buffer ``tx``, refused as early (so its signature was checked), if
        its participant could be paid for it: a mature bond at the task's
        height. Tried again at every tip (a round opens at a height nobody
        knows in advance) until the last height its round's window could
        have if each round before it closed as soon as it was due; an update
        whose task we lack, for ``UNKNOWN_TASK_BLOCKS`` blocks."""
        chain, params = self._chain.chain, self._chain.params
        state, tip = chain.state, chain.height
        task, fed = state.get(task_key(tx.task_id)), state.get(fed_key(tx.task_id))
        if reason == "update-task-unknown" and task is None:
            seeded_by = tip + UNKNOWN_TASK_BLOCKS  # the task's block is later than our tip
            expires = tip + UNKNOWN_TASK_BLOCKS
        elif reason == "bad-update-round" and task is not None and fed is not None:
            ahead = tx.round - int(fed["round"])
            if ahead <= 0 or tx.round >= task["spec"]["rounds"] or bytes(task["seed"]) != tx.seed:
                return  # a round that is over, or that never comes
            blocks = int(task["spec"]["federated"]["round_blocks"])
            due = max(tip, int(fed["opened_at"]) + blocks)  # round r is closed by then
            seeded_by = int(task["height"])
            expires = min(int(task["close_at"]), due + ahead * (blocks + 1))
        else:  # a reorg raced
            return
        if expires_at is not None:
            expires = min(expires, expires_at)
        try:
            require_bond(StateView(state), params, tx.participant, seeded_by)
        except ValidationError:
            return
        if self.waiting.add(tx, peer, tip + 1, expires):
            if task is not None:
                self._note(tx.task_id, tx.round, tx.participant, "held", reason, peer)
            log.debug("update %s held (%s) until height %d", tx.id.hex()[:16], reason, expires)

    def _retry_waiting(self) -> None:
        tip = self._chain.chain.height
        for w in self.waiting.take_ready(tip):
            try:
                self._admit(w.tx, w.peer)
            except MissingDataError:  # its round is open: check the artifact, then pool
                if not self._start_check(w.tx, w.peer):
                    self.waiting.add(w.tx, w.peer, tip + 1, w.expires_at)
                continue
            except ValidationError as exc:
                if exc.reason in EARLY:
                    self._hold(w.tx, w.peer, exc.reason, w.expires_at)
                else:
                    log.debug("held update %s refused: %s", w.tx.id.hex()[:16], exc)
                continue
            # Gossip delivered it once, and we ignored it: send it on.
            self._spawn(self._relay.tx(w.tx), "relay-update")

    async def _check(self, tx: UpdateTx, source: str) -> None:
        task = self._chain.chain.state.get(task_key(tx.task_id))
        if task is not None and "federated" in task["spec"]:
            verdict = await self.verifier.answer(UpdateCheck(tx, task["spec"], bytes(task["seed"])))
            if verdict:
                self._note(tx.task_id, tx.round, tx.participant, "rejected", verdict, source)

    def _admit(self, tx: UpdateTx, source: str) -> None:
        self._mempool.admit(tx, self._chain.chain, self.verifier.peek)
        log.info(
            "update %s of round %d from %s entered the mempool", tx.id.hex()[:16], tx.round, source
        )
        self._on_pool_change()

    async def _check_then_pool(self, tx: UpdateTx, source: str) -> None:
        t0 = self._clock()
        try:
            await self._check(tx, source)
            self._admit(tx, source)
        except MissingDataError as exc:  # its artifact (or our dataset) still missing
            log.info("gossiped update %s from %s: %s", tx.id.hex()[:16], source, exc)
            return
        except ValidationError as exc:
            log.info("gossiped update %s from %s: %s", tx.id.hex()[:16], source, exc)
            if exc.reason not in HARMLESS and self._gossip is not None:
                # The verdict is a function of the signed update and its
                # artifact alone: the relay is provably at fault.
                self._gossip.penalise(source, f"invalid-update:{exc.reason}", FALSE_RESULT_PENALTY)
            return
        finally:
            self._checking.discard(tx.id)
            # Settle the reservation with what the check really cost.
            self.budget.charge(source, self._clock() - t0 - CHECK_RESERVE_SECONDS)
        await self._relay.tx(tx)

    # -- round closes for block templates ----------------------------------------------

    def closes(self, selected: Iterable[PoolTx]) -> list[Transaction]:
        """Round-close transactions due in a block on the tip holding ``selected``
        (applied in order first): those whose G_{r+1} this node has computed.
        Missing ones are computed in the background; the miner is told when done."""
        if not self.tasks:
            return []
        chain = self._chain.chain
        view = StateView(chain.state)
        ctx = BlockContext(
            self._chain.params, chain.height + 1, bytes(32), 0, verdict=self.verifier.peek
        )
        for tx in selected:
            trial = view.child()
            try:
                handler_for(tx).apply(tx, trial, ctx)
            except ValidationError:
                continue
            view.merge(trial)
        out: list[Transaction] = []
        for task_id in sorted(self.tasks):
            task, fed = view.get(task_key(task_id)), view.get(fed_key(task_id))
            if task is None or fed is None or not task["open"]:
                continue
            if fed["round"] >= task["spec"]["rounds"] or not round_due(
                fed, task["spec"], ctx.height
            ):
                continue
            expected = self.verifier.expected_close(task_id, task, fed)
            if expected is None:
                self._compute_close(task_id, task, fed)
                continue
            digest, gains = expected
            close = RoundCloseTx(task_id, int(fed["round"]), digest, gains)
            trial = view.child()
            try:
                RoundCloseHandler().apply(close, trial, ctx)
            except ValidationError as exc:
                log.debug("round close of %s not possible: %s", task_id.hex()[:16], exc)
                continue
            view.merge(trial)
            out.append(close)
        return out

    def _compute_close(
        self, task_id: bytes, task: Mapping[str, Any], fed: Mapping[str, Any]
    ) -> None:
        req = close_check(task_id, task, fed)
        if req.key in self._computing:
            return
        self._computing.add(req.key)

        async def run() -> None:
            try:
                await self.verifier.answer(req)
            finally:
                self._computing.discard(req.key)

        self._spawn(run(), "federated-aggregate")

    # -- the API -----------------------------------------------------------------------

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A POST /tasks body with its federated spec filled in: defaults, and the
        features and class list read from the dataset (which fix the layout)."""
        fed = body.get("federated")
        if not isinstance(fed, dict):
            return body
        need_features, need_classes = not body.get("features"), "classes" not in fed
        fed = {**FEDERATED_DEFAULTS, **fed}
        if fed["private"] and fed["validation"] and not body.get("dataset_cid"):
            # A private task's public data is its validation set: it fixes d and K.
            body = {**body, "dataset_cid": fed["validation"]}
        fed = await self._noise_for_budget(fed, body)
        if need_features or need_classes:
            probe = TaskSpec(
                dataset_cid=str(body.get("dataset_cid", "")),
                target=str(body.get("target", "")),
                model=str(body.get("model", "")),
                kind=str(body.get("kind", "")),
                metric=str(body.get("metric", "")),
                features=tuple(body.get("features") or ()),
            )
            try:
                features, classes = await self._pool.run(
                    "fed_describe",
                    FedDescribeRequest(probe, await self.verifier.data(probe)),
                    self._settings.max_job_seconds,
                    Priority.TRAIN,
                )
            except (DatasetError, TrainingError) as exc:
                raise ValidationError("bad-task-cid", f"cannot read the dataset: {exc}") from None
            if need_features:
                body = {**body, "features": features}
            if need_classes:
                fed["classes"] = classes
        return {**body, "federated": fed}

    @staticmethod
    async def _noise_for_budget(fed: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """An epsilon budget without a noise multiplier: the smallest z whose plan
        stays within it (the accountant; bisection, so in a thread)."""
        eps, delta, rounds = fed.get("epsilon"), fed.get("delta"), body.get("rounds", 1)
        if fed.get("noise_multiplier") or not eps:
            return fed
        if not (isinstance(eps, int | float) and isinstance(delta, int | float)):
            return fed  # the spec's own checks name the problem
        if type(rounds) is not int or not 0 < delta < 1 or eps <= 0:
            return fed
        from p2pml.federated.accountant import noise_for_epsilon

        q = fed.get("sampling_rate", 1.0)
        z = await asyncio.to_thread(noise_for_epsilon, float(eps), float(q), rounds, float(delta))
        return {**fed, "noise_multiplier": float(z)}

    # -- views for the API -------------------------------------------------------------

    def describe(self, task_id: bytes) -> dict[str, Any] | None:
        """Rounds (model hash, CID, holdout metric, updates), and this node's events."""
        state = self._chain.chain.state
        fed = state.get(fed_key(task_id))
        if fed is None:
            return None
        task = state.get(task_key(task_id))
        shares = round_shares(task, fed) if task is not None else [[] for _ in fed["closed"]]
        rounds = []
        for i, ((height, updates), digest, gains, paid) in enumerate(
            zip(fed["closed"], fed["models"], fed["gains"], shares, strict=True)
        ):
            h = bytes(digest)
            rounds.append(
                {
                    "round": i,
                    "closed_at": height,
                    "model_hash": h.hex(),
                    "model_cid": self.verifier.model_cids.get(h),
                    "metric": self.verifier.metrics.get(h),
                    # What each update earns of the round's share (paid at close);
                    # its gain is null unless the round was rewarded by improvement.
                    "updates": [
                        {
                            "participant": bytes(p).hex(),
                            "update_cid": c,
                            "n_samples": n,
                            "gain": gains[k] if gains else None,
                            "share": paid[k] if paid else None,
                        }
                        for k, (p, c, n) in enumerate(updates)
                    ],
                }
            )
        final = bytes(fed["models"][-1]) if fed["models"] else None
        ready = task is not None and self.verifier.expected_close(task_id, task, fed) is not None
        f = task["spec"]["federated"] if task is not None else {}
        return {
            # This node holds G_{r+1} of the round state at the tip (a close can be mined).
            "next_model_ready": ready,
            "mode": "private" if f.get("private") else "public",
            "private": f.get("private", ""),
            "rule": f.get("aggregation"),
            "trim": f.get("trim", 0),
            "clip": f.get("clip", 0.0),
            "validation": f.get("validation", ""),
            "reward": f.get("reward", "samples"),
            "dp": bool(f.get("noise_multiplier")),
            "noise_multiplier": f.get("noise_multiplier", 0.0),
            "sampling_rate": f.get("sampling_rate", 1.0),
            "delta": f.get("delta", 0.0),
            # The privacy loss of the rounds closed so far, as the chain records it.
            "epsilon_spent": fed.get("epsilon", 0.0),
            "epsilon_budget": f.get("epsilon", 0.0),
            "round": fed["round"],
            "opened_at": fed["opened_at"],
            "model_hash": final.hex() if final else None,
            "model_cid": self.verifier.model_cids.get(final) if final else None,
            "pending_updates": [
                {"participant": bytes(p).hex(), "update_cid": c, "n_samples": n}
                for p, c, n in fed["updates"]
            ],
            "rounds": rounds,
            "events": list(self.events.get(task_id, [])),
        }

    def final_model(self, task_id: bytes) -> str | None:
        """The IPFS CID of the last committed global model, if this node stored it."""
        fed = self._chain.chain.state.get(fed_key(task_id))
        if fed is None or not fed["models"]:
            return None
        return self.verifier.model_cids.get(bytes(fed["models"][-1]))
