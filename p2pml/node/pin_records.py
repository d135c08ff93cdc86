"""The part of chain state the pin policy reads, kept current from each tip
change's state writes, so a pin pass costs O(records of tasks still live),
not O(state).

Task records stay in chain state for ever; a task whose dataset and
artifacts are released for good (paid ``retention`` blocks ago, not ours)
leaves this view with its results (``rid:``) and federated rounds
(``fed:``). A reorg (a disconnected block) rebuilds the view from the whole
state once: the undo restores records this view may have dropped, and
reorgs are rare.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from p2pml.chain.index import ChainUpdate
from p2pml.chain.tasks import task_key

TASK_PREFIX = b"task:"
RESULT_PREFIX = b"rid:"
FED_PREFIX = b"fed:"


def needed(task: Mapping[str, Any], height: int, retention: int) -> bool:
    """Whether the chain at ``height`` may still re-check ``task``'s data:
    until it is paid (a dispute resolves by the payout height at the latest),
    then for the ``retention`` margin a shallow reorg may undo."""
    if not task["paid"]:
        return True
    return height - int(task["payout_at"]) < retention


def owning_task(key: bytes, rec: Any) -> bytes | None:
    """The task key a ``rid:``/``fed:`` record belongs to (None for others)."""
    if key.startswith(RESULT_PREFIX):
        return task_key(bytes(rec["task"]))
    if key.startswith(FED_PREFIX):
        return task_key(key[len(FED_PREFIX) :])
    return None


def artifact_cids(key: bytes, rec: Any) -> list[str]:
    """The artifacts a ``rid:`` (its model) or ``fed:`` record (every update
    of the open and the closed rounds) names."""
    if key.startswith(RESULT_PREFIX):
        return [str(rec["model_cid"])]
    if key.startswith(FED_PREFIX):
        rounds = [rec["updates"], *(updates for _height, updates in rec["closed"])]
        return [str(u[1]) for updates in rounds for u in updates]
    return []


class PinRecords:
    def __init__(self, me: bytes, retention: int) -> None:
        self._me = me
        self._retention = retention
        self.records: dict[bytes, Any] = {}  # task:*, rid:* and fed:*
        self._stale = True  # nothing loaded yet

    @staticmethod
    def _tracked(key: bytes) -> bool:
        return key.startswith((TASK_PREFIX, RESULT_PREFIX, FED_PREFIX))

    def note(self, update: ChainUpdate) -> None:
        """Fold one tip change in (cheap: O(its writes))."""
        if update.disconnected:
            self._stale = True
        if self._stale:
            return
        for key, rec in update.state_changes.items():
            if rec is None:
                self.records.pop(key, None)
            elif self._tracked(key):
                self.records[key] = rec

    def view(self, state: Mapping[bytes, Any]) -> Mapping[bytes, Any]:
        """The records to plan from; ``state`` is read whole only when stale."""
        if self._stale:
            self.records = {k: v for k, v in state.items() if self._tracked(k)}
            self._stale = False
        return self.records

    def prune(self, height: int, done: set[str], keep: frozenset[str]) -> None:
        """Drop tasks released for good: paid ``retention`` blocks ago, not
        ours, and every CID they name already unpinned (``done``) or still
        kept by another task; then their results and federated rounds."""
        by_task: dict[bytes, list[str]] = {}
        for key, rec in self.records.items():
            owner = owning_task(key, rec)
            if owner is not None:
                by_task.setdefault(owner, []).extend(artifact_cids(key, rec))
        for key, rec in list(self.records.items()):
            if not key.startswith(TASK_PREFIX) or needed(rec, height, self._retention):
                continue
            if bytes(rec["publisher"]) == self._me:
                continue
            cids = [str(rec["spec"]["dataset_cid"]), *by_task.get(key, [])]
            if all(c in done or c in keep for c in cids):
                del self.records[key]
        for key, rec in list(self.records.items()):
            owner = owning_task(key, rec)
            if owner is not None and owner not in self.records:
                del self.records[key]
