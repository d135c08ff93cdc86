"""Following a task until it closes: one poll loop for the CLI and the client.

Progress is read from the admin API (``GET /tasks/{id}`` and ``/status``):
chain height, the task's status, rounds with a result, results in (of the
task's ``max_results``) and the best metric so far. ``follow`` calls back on
every change and returns the final task view once the task is closed. A
``KeyboardInterrupt`` stops the following only: the task goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2pml.api.client import ApiClient
from p2pml.errors import WaitTimeout


@dataclass(frozen=True)
class Progress:
    height: int
    status: str  # pending | open | closed
    rounds: int  # of the task
    rounds_done: int  # rounds with at least one result in the chain
    results: int
    max_results: int | None
    metric: str
    best: float | None

    @classmethod
    def of(cls, view: dict[str, Any], height: int) -> Progress:
        spec = view["spec"]
        best = view.get("best")
        return cls(
            height=height,
            status=view["status"],
            rounds=int(spec["rounds"]),
            rounds_done=len({r["round"] for r in view.get("results", [])}),
            results=int(view.get("rounds_done", 0)),
            max_results=view.get("max_results"),
            metric=spec["metric"],
            best=None if not best else float(best["metric"]),
        )

    def line(self) -> str:
        total = "?" if self.max_results is None else str(self.max_results)
        best = "-" if self.best is None else f"{self.best:.4f}"
        return (
            f"height {self.height:>4}  task {self.status:<7}  "
            f"rounds {self.rounds_done}/{self.rounds}  results {self.results}/{total}  "
            f"best {self.metric} {best}"
        )


def follow(
    api: ApiClient,
    task_id: str,
    on_change: Callable[[Progress], None],
    poll: float = 1.0,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the task is closed; returns its final view (``WaitTimeout``
    after ``timeout`` seconds; ``ApiError`` if the task is unknown)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last: Progress | None = None
    while True:
        view: dict[str, Any] = api.get(f"/tasks/{task_id}")
        height = int(api.get("/status")["height"])
        now = Progress.of(view, height)
        if now != last:
            on_change(now)
            last = now
        if view["status"] == "closed":
            return view
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeout(task_id, timeout or 0.0)
        sleep(poll)  # polling a remote API at a fixed rate, not test synchronisation
