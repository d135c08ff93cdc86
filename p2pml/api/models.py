"""Model downloads for the admin API: a task's best model, or one result's.

``GET /tasks/{id}/model`` and ``GET /results/{id}/model`` stream the model
artifact, fetched through the node's IPFS store: ``DatasetStore.fetch``
returns a local file whose bytes were verified against the CID (a mismatch
never reaches the client). The response names the CID (``X-Model-CID``) so
a client can check what it received end to end (the CLI and the Python client
do). ``GET .../model/card`` is the JSON *model card*
(:mod:`p2pml.ml.modelfile`): estimator, parameters, protocol random_state,
target and the task's feature columns in order, resolved from the dataset's
header when the task names none ("every column but the target").

Errors: an unknown or malformed id is 404 ``not-found``; a task without a
result yet is 404 ``no-result``; IPFS failures are 503 ``model-unavailable``
or ``dataset-unavailable``. The handlers depend only on a store with
``fetch`` and two lookups, so they are wired into any app with
:meth:`ModelRoutes.add_to`.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web

from p2pml.errors import DatasetError, NotFoundError
from p2pml.ml.estimators import CLASSIFICATION

if TYPE_CHECKING:
    from p2pml.ml.modelfile import ModelCard

MAX_HEADER_BYTES: Final = 1 << 20
#: (dataset CID, kind, target) -> label names: a pass over the dataset each.
LABEL_CACHE_ENTRIES: Final = 64

#: task id -> the task's API view; result id -> its view. Unknown ids: ``None``
#: or ``{}``, or :class:`NotFoundError` raised.
TaskLookup = Callable[[bytes], dict[str, Any] | None]
ResultLookup = Callable[[bytes], dict[str, Any]]


class Fetcher(Protocol):
    async def fetch(self, cid: str) -> Path: ...


class NotServed(Exception):
    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(error)
        self.status, self.error, self.reason = status, error, reason

    def response(self) -> web.Response:
        return web.json_response({"error": self.error, "reason": self.reason}, status=self.status)


def _id(req: web.Request) -> bytes:
    try:
        raw = bytes.fromhex(req.match_info["id"])
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise NotServed(404, "ids are 64 hex digits", "not-found")
    return raw


class ModelRoutes:
    def __init__(self, store: Fetcher, task_view: TaskLookup, result_view: ResultLookup) -> None:
        self.store = store
        self.task_view = task_view
        self.result_view = result_view
        self._labels: dict[tuple[str, str, str], tuple[str, ...]] = {}

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/tasks/{id}/model", self._guard(self.task_model))
        router.add_get("/tasks/{id}/model/card", self._guard(self.task_card))
        router.add_get("/results/{id}/model", self._guard(self.result_model))
        router.add_get("/results/{id}/model/card", self._guard(self.result_card))

    @staticmethod
    def _guard(
        fn: Callable[[web.Request], Any],
    ) -> Callable[[web.Request], Any]:
        async def handler(req: web.Request) -> web.StreamResponse:
            try:
                result: web.StreamResponse = await fn(req)
                return result
            except NotServed as exc:
                return exc.response()

        return handler

    # -- lookups ---------------------------------------------------------------------

    def _task(self, task_id: bytes) -> dict[str, Any] | None:
        try:
            return self.task_view(task_id)
        except NotFoundError:
            return None

    def _result(self, result_id: bytes) -> dict[str, Any]:
        try:
            return self.result_view(result_id)
        except NotFoundError:
            return {}

    def best_result(self, task_id: bytes) -> dict[str, Any]:
        task = self._task(task_id)
        if task is None:
            raise NotServed(404, "no such task", "not-found")
        best = task.get("best")
        if not best:
            raise NotServed(404, "the task has no result yet", "no-result")
        result = self._result(bytes.fromhex(best["result"]))
        if not result:  # pragma: no cover - the chain names only results it holds
            raise NotServed(404, "the best result is unknown", "no-result")
        return result

    def result(self, result_id: bytes) -> dict[str, Any]:
        result = self._result(result_id)
        if not result:
            raise NotServed(404, "no such result", "not-found")
        return result

    async def _fetch(self, cid: str, what: str) -> Path:
        try:
            return await self.store.fetch(cid)
        except DatasetError as exc:
            raise NotServed(
                503, f"cannot fetch {what} {cid}: {exc}", f"{what}-unavailable"
            ) from None

    # -- handlers --------------------------------------------------------------------

    async def task_model(self, req: web.Request) -> web.StreamResponse:
        task = self._task(_id(req))
        if task is not None and task.get("federated") is not None:
            return await self._stream_global(task)
        return await self._stream(req, self.best_result(_id(req)))

    async def _stream_global(self, task: dict[str, Any]) -> web.StreamResponse:
        """A federated task's model: its last committed global model, in the
        canonical encoding of docs/federated.md §4 (never a pickle)."""
        fed = task["federated"]
        cid = fed.get("model_cid")
        if not cid:
            raise NotServed(404, "no global model stored on this node yet", "no-result")
        path = await self._fetch(cid, "model")
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{cid}.p2fl"',
            "X-Model-CID": cid,
            "X-Model-Hash": fed["model_hash"],
            "X-Task": task["id"],
        }
        return web.FileResponse(path, chunk_size=1 << 18, headers=headers)

    async def result_model(self, req: web.Request) -> web.StreamResponse:
        return await self._stream(req, self.result(_id(req)))

    async def task_card(self, req: web.Request) -> web.Response:
        return web.json_response((await self.card(self.best_result(_id(req)))).to_json())

    async def result_card(self, req: web.Request) -> web.Response:
        return web.json_response((await self.card(self.result(_id(req)))).to_json())

    async def _stream(self, req: web.Request, result: dict[str, Any]) -> web.StreamResponse:
        cid = result["model_cid"]
        path = await self._fetch(cid, "model")
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{cid}.skops"',
            "X-Model-CID": cid,
            "X-Result": result["id"],
            "X-Task": result["task"],
        }
        return web.FileResponse(path, chunk_size=1 << 18, headers=headers)

    async def card(self, result: dict[str, Any]) -> ModelCard:
        # Imported here: they pull in numpy (17 MB of the node's RSS) for a
        # rarely called route; the node itself never needs numpy.
        from p2pml.ml.modelfile import ModelCard
        from p2pml.ml.partition import derive_random_state

        task = self._task(bytes.fromhex(result["task"]))
        if task is None or "seed" not in task:  # pragma: no cover - results need a mined task
            raise NotServed(404, "the result's task is not in the chain", "no-result")
        spec = task["spec"]
        features = tuple(spec.get("features") or ())
        if not features:
            features = await self.dataset_features(spec["dataset_cid"], spec["target"])
        random_state = derive_random_state(
            bytes.fromhex(task["seed"]),
            bytes.fromhex(task["id"]),
            bytes.fromhex(result["trainer"]),
            int(result["round"]),
        )
        params = spec["params"]
        labels = await self.label_names(spec["dataset_cid"], spec["kind"], spec["target"])
        return ModelCard(
            model=spec["model"],
            kind=spec["kind"],
            target=spec["target"],
            features=features,
            params=dict(params) if not isinstance(params, dict) else params,
            random_state=random_state,
            metric=spec["metric"],
            metric_value=result["metric"],
            task=task["id"],
            result=result["id"],
            model_cid=result["model_cid"],
            labels=labels,
        )

    async def label_names(self, cid: str, kind: str, target: str) -> tuple[str, ...]:
        """Names of a classification task's string labels, by class code."""
        key = (cid, kind, target)
        if kind != CLASSIFICATION:
            return ()
        if key not in self._labels:
            from p2pml.ml.labels import label_names  # numpy: not at node start

            path = await self._fetch(cid, "dataset")
            names = await asyncio.to_thread(label_names, path, kind, target)
            if len(self._labels) >= LABEL_CACHE_ENTRIES:
                self._labels.pop(next(iter(self._labels)))
            self._labels[key] = names
        return self._labels[key]

    async def dataset_features(self, cid: str, target: str) -> tuple[str, ...]:
        """Every column of the dataset's header but the target, in order."""
        path = await self._fetch(cid, "dataset")
        columns = await asyncio.to_thread(_header, path)
        return tuple(c for c in columns if c != target)


def _header(path: Path) -> list[str]:
    with path.open("rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    line = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
    return next(csv.reader(io.StringIO(line)), [])
