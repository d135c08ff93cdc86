"""The p2pml Python client: the admin API for notebooks and scripts.

Talk to a running node (``p2pml node`` or ``p2pml devnet``)::

    from p2pml.client import Client

    c = Client("http://127.0.0.1:8081", token_file="devnet/node1/data/admin.token")
    cid = c.add_dataset("diabetes.csv")            # or a pandas DataFrame
    task = c.publish_task(cid, target="target", model="ridge",
                          params={"alpha": 0.5}, rounds=2, bounty=100_000)
    task.wait(progress=True)                       # until the task closes
    task.results()                                 # a pandas DataFrame
    model = task.best_model()                      # a fitted scikit-learn estimator
    task.predict(new_rows)                         # rows + predicted_<target>

Models are downloaded through the node, checked against their CID here, and
loaded with the project's strict reader (never pickle), with the task's
estimator, parameters and feature count checked. Every error is a
:class:`p2pml.errors.P2PMLError`: :class:`~p2pml.errors.ApiError` (``status``
and ``reason`` as the API gives them, e.g. 404 ``no-result``),
:class:`~p2pml.errors.WaitTimeout`, :class:`~p2pml.errors.InputError`,
:class:`~p2pml.errors.ModelArtifactError`.

Reading needs no token; adding datasets and publishing tasks do
(``token_file`` is ``DATA_DIR/admin.token`` of the node).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from p2pml.api.client import ApiClient
from p2pml.errors import ApiError, InputError
from p2pml.follow import Progress, follow
from p2pml.ipfs.cid import cid_of_file
from p2pml.ml.estimators import CLASSIFICATION, get_estimator
from p2pml.ml.modelfile import LoadedModel, ModelCard, card_path, load_bytes, write_card

__all__ = ["Client", "TaskHandle"]

DEFAULT_METRIC = {CLASSIFICATION: "accuracy"}  # regression: r2


class Client:
    """A node's admin API. ``api_url`` defaults to ``$P2PML_API`` or
    http://127.0.0.1:8080; ``token`` or ``token_file`` enables writes."""

    def __init__(
        self,
        api_url: str | None = None,
        token_file: str | Path | None = None,
        token: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        if token is None and token_file is not None:
            token = ApiClient.with_token_file(api_url, Path(token_file)).token
        self.api = ApiClient(api_url, token, timeout)

    @property
    def url(self) -> str:
        return self.api.base

    def status(self) -> dict[str, Any]:
        """The node's status (height, peers, mining, training, IPFS)."""
        return dict(self.api.get("/status"))

    # -- datasets --------------------------------------------------------------------

    def add_dataset(self, data: str | Path | Any, name: str | None = None) -> str:
        """Add a CSV file, or a pandas DataFrame (written as CSV without its
        index), to the node's IPFS; returns the CID."""
        if isinstance(data, str | Path):
            path = Path(data)
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            return str(self.api.upload("/datasets", path)["cid"])
        if not hasattr(data, "to_csv"):
            raise InputError("add_dataset takes a path or a pandas DataFrame")
        with tempfile.TemporaryDirectory(prefix="p2pml-") as tmp:
            path = Path(tmp) / (name or "dataframe.csv")
            data.to_csv(path, index=False)
            return str(self.api.upload("/datasets", path)["cid"])

    def datasets(self) -> Any:
        """The datasets this node added, newest first, as a DataFrame."""
        import pandas as pd

        cols = ["cid", "name", "size", "rows", "columns", "added"]
        return pd.DataFrame(self.api.get("/datasets"), columns=cols)

    # -- coins -----------------------------------------------------------------------

    def balance(self, public_key: str | None = None) -> int:
        """The balance of ``public_key`` (hex; default: the node's own key)."""
        key = public_key or str(self.status()["public_key"])
        return int(self.api.get(f"/balances/{key}")["balance"])

    def send(self, recipient: str, amount: int, fee: int | None = None) -> str:
        """Send ``amount`` from the node's key to ``recipient`` (hex public
        key); returns the transfer id. ``fee`` defaults to the network's
        minimum; a refused transfer raises ``ApiError`` with the rule's
        reason (e.g. ``insufficient-funds``)."""
        body: dict[str, Any] = {"recipient": recipient, "amount": amount}
        if fee is not None:
            body["fee"] = fee
        return str(self.api.post("/transfers", body)["id"])

    # -- tasks -----------------------------------------------------------------------

    def publish_task(
        self,
        dataset: str,
        target: str,
        model: str,
        *,
        params: Mapping[str, Any] | None = None,
        kind: str | None = None,
        metric: str | None = None,
        features: Sequence[str] | None = None,
        rounds: int = 1,
        partition: float = 0.5,
        holdout: float = 0.2,
        bounty: int = 0,
        deadline: int = 20,
        fee: int | None = None,
        max_results: int | None = None,
        result_reward: int | None = None,
    ) -> TaskHandle:
        """Publish a training task signed with the node's key.

        ``kind`` follows from the estimator and ``metric`` defaults to r2 or
        accuracy; ``fee``, ``max_results`` and ``result_reward`` default to
        the node's. Bad specs raise ``ApiError`` with the rule's reason
        (e.g. ``bad-task-param``)."""
        try:
            est_kind = get_estimator(model).kind
        except Exception as exc:  # ValidationError: not allowlisted
            raise InputError(str(exc)) from None
        kind = kind or est_kind
        body: dict[str, Any] = {
            "dataset_cid": dataset,
            "target": target,
            "model": model,
            "kind": kind,
            "metric": metric or DEFAULT_METRIC.get(kind, "r2"),
            "params": dict(params or {}),
            "rounds": rounds,
            "partition_fraction": float(partition),
            "holdout_fraction": float(holdout),
            "bounty": bounty,
            "deadline": deadline,
        }
        if features:
            body["features"] = list(features)
        for key, value in (
            ("fee", fee),
            ("max_results", max_results),
            ("result_reward", result_reward),
        ):
            if value is not None:
                body[key] = value
        return TaskHandle(self, str(self.api.post("/tasks", body)["id"]))

    def task(self, task_id: str) -> TaskHandle:
        """A handle on an existing task (``ApiError`` 404 if the node does not know it)."""
        handle = TaskHandle(self, task_id)
        handle.info()
        return handle

    def tasks(self) -> Any:
        """Every task the node knows, as a DataFrame."""
        import pandas as pd

        cols = ["id", "status", "model", "metric", "rounds", "results", "best", "height", "bounty"]
        return pd.DataFrame(self.api.get("/tasks"), columns=cols)


class TaskHandle:
    """One task on the network, seen through the client's node."""

    def __init__(self, client: Client, task_id: str) -> None:
        self.client = client
        self.id = task_id

    def __repr__(self) -> str:
        return f"TaskHandle({self.id[:16]}...)"

    def info(self) -> dict[str, Any]:
        """The task's full view: spec, status, results, best, payout, failures."""
        return dict(self.client.api.get(f"/tasks/{self.id}"))

    @property
    def status(self) -> str:
        return str(self.info()["status"])

    def wait(
        self, progress: bool = False, timeout: float | None = None, poll: float = 1.0
    ) -> dict[str, Any]:
        """Block until the task closes; returns its final view.

        ``progress=True`` shows a bar (tqdm if installed, else a line on
        stderr). ``WaitTimeout`` after ``timeout`` seconds (the task goes on)."""
        show = _progress_display(self.id) if progress else None
        try:
            return follow(self.client.api, self.id, show or (lambda _p: None), poll, timeout)
        finally:
            if show is not None:
                show.close()

    def results(self) -> Any:
        """The task's results as a DataFrame (best metric first)."""
        import pandas as pd

        view = self.info()
        cols = ["id", "round", "trainer", "metric", "model_cid", "status", "height", "train_rows"]
        df = pd.DataFrame(view.get("results", []), columns=cols)
        higher_is_better = view["spec"]["metric"] not in ("rmse", "mae", "log_loss")
        return df.sort_values("metric", ascending=not higher_is_better, kind="stable").reset_index(
            drop=True
        )

    def model_card(self, result: str | None = None) -> ModelCard:
        """The card of the best model (or of ``result``): estimator, params, columns."""
        path = f"/results/{result}/model/card" if result else f"/tasks/{self.id}/model/card"
        return ModelCard.from_json(self.client.api.get(path), f"model card of {self.id[:16]}")

    def download_model(self, dest: str | Path, result: str | None = None) -> Path:
        """Save the best model (or ``result``'s) and its card (``dest`` + ".json");
        the artifact is checked against its CID before it is kept."""
        dest = Path(dest)
        card = self.model_card(result)
        base = f"/results/{result}/model" if result else f"/tasks/{self.id}/model"
        _download_checked(self.client.api, base, dest, card.model_cid)
        write_card(card_path(dest), card)
        return dest

    def load_best_model(self, result: str | None = None) -> LoadedModel:
        with tempfile.TemporaryDirectory(prefix="p2pml-model-") as tmp:
            path = self.download_model(Path(tmp) / "model.skops", result)
            return load_bytes(path.read_bytes(), self.model_card(result))

    def best_model(self) -> Any:
        """The best model as a fitted scikit-learn estimator (safe reader, never
        pickle). ``ApiError`` 404 ``no-result`` if there is no result yet."""
        return self.load_best_model().model

    def predict(self, rows: Any, proba: bool = False) -> Any:
        """``rows`` (a DataFrame with the task's feature columns) plus predictions."""
        from p2pml.ml.predict import predict_frame

        return predict_frame(self.load_best_model(), rows, proba=proba, where="rows")


def _download_checked(
    api: ApiClient, path: str, dest: Path, cid: str, progress: Any = None
) -> None:
    headers = api.download(path, dest, progress)
    got = cid_of_file(dest)
    if got != cid or headers.get("x-model-cid", cid) != cid:
        dest.unlink(missing_ok=True)
        raise ApiError(
            0, f"downloaded model does not match its CID {cid} (got {got})", "cid-mismatch"
        )


class _LineProgress:
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id

    def __call__(self, p: Progress) -> None:
        print(f"task {self.task_id[:16]}  {p.line()}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class _TqdmProgress:
    def __init__(self, task_id: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=None, desc=f"task {task_id[:12]}", unit="result")

    def __call__(self, p: Progress) -> None:
        if p.max_results is not None and self.bar.total != p.max_results:
            self.bar.total = p.max_results
        self.bar.n = p.results
        best = "-" if p.best is None else f"{p.best:.4f}"
        self.bar.set_postfix_str(f"{p.status} h{p.height} best {p.metric} {best}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _progress_display(task_id: str) -> _LineProgress | _TqdmProgress:
    try:
        return _TqdmProgress(task_id)
    except ImportError:
        return _LineProgress(task_id)
