"""Chain-state keys of tasks and results (shared by the task, payout and
bond rules, and by the node's read-only queries)."""

from __future__ import annotations


def task_key(task_id: bytes) -> bytes:
    return b"task:" + task_id


def result_key(result_id: bytes) -> bytes:
    return b"rid:" + result_id


def slot_key(task_id: bytes, trainer: bytes, rnd: int) -> bytes:
    return b"slot:" + task_id + trainer + rnd.to_bytes(4, "big")


def deadline_key(height: int) -> bytes:
    return b"dl:" + height.to_bytes(8, "big")


def fed_key(task_id: bytes) -> bytes:
    """A federated task's round record (p2pml.chain.federated_rounds)."""
    return b"fed:" + task_id
