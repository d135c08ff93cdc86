"""The part of chain state the pin policy reads, kept current from each tip
change's state writes, so a pin pass costs O(tasks still live), not O(state).

Task records stay in chain state for ever; a task whose dataset and our
artifacts are released for good (closed ``retention`` blocks ago, not ours)
leaves this view. A reorg (a disconnected block) rebuilds the view from the
whole state once: the undo restores records this view may have dropped, and
reorgs are rare.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from p2pml.chain.index import ChainUpdate
from p2pml.chain.tasks import task_key

TASK_PREFIX = b"task:"
RESULT_PREFIX = b"rid:"


class PinRecords:
    def __init__(self, me: bytes, retention: int) -> None:
        self._me = me
        self._retention = retention
        self.records: dict[bytes, Any] = {}  # task:* and our own rid:*
        self._stale = True  # nothing loaded yet

    def _ours(self, key: bytes, rec: Any) -> bool:
        if key.startswith(TASK_PREFIX):
            return True
        return key.startswith(RESULT_PREFIX) and bytes(rec["trainer"]) == self._me

    def note(self, update: ChainUpdate) -> None:
        """Fold one tip change in (cheap: O(its writes))."""
        if update.disconnected:
            self._stale = True
        if self._stale:
            return
        for key, rec in update.state_changes.items():
            if rec is None:
                self.records.pop(key, None)
            elif self._ours(key, rec):
                self.records[key] = rec

    def view(self, state: Mapping[bytes, Any]) -> Mapping[bytes, Any]:
        """The records to plan from; ``state`` is read whole only when stale."""
        if self._stale:
            self.records = {k: v for k, v in state.items() if self._ours(k, v)}
            self._stale = False
        return self.records

    def prune(self, height: int, done: set[str], keep: frozenset[str]) -> None:
        """Drop tasks released for good: expired, not ours, and every CID they
        name already unpinned (``done``) or still kept by another task."""
        by_task: dict[bytes, list[str]] = {}
        for key, rec in self.records.items():
            if key.startswith(RESULT_PREFIX):
                by_task.setdefault(bytes(rec["task"]), []).append(str(rec["model_cid"]))
        for key, rec in list(self.records.items()):
            if not key.startswith(TASK_PREFIX) or rec["open"]:
                continue
            if bytes(rec["publisher"]) == self._me:
                continue
            if height - int(rec["closed_at"]) < self._retention:
                continue
            tid = key[len(TASK_PREFIX) :]
            cids = [str(rec["spec"]["dataset_cid"]), *by_task.get(tid, [])]
            if all(c in done or c in keep for c in cids):
                del self.records[key]
        for key, rec in list(self.records.items()):
            if key.startswith(RESULT_PREFIX) and task_key(bytes(rec["task"])) not in self.records:
                del self.records[key]
