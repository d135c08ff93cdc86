"""The Dask executor against a real ``dask.distributed`` cluster on 127.0.0.1.

A ``LocalCluster`` of two worker processes (one thread each, behind nannies)
runs the node's jobs: the same bits as the local pool, the dataset scattered
once per CID and checked on the worker, time and memory limits, a worker
killed mid-job, a scheduler that is down at start or goes away.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import pytest_asyncio
from distributed import Client, LocalCluster

from p2pml.config import TrainingSettings
from p2pml.errors import TrainingError, ValidationError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml.artifact import load_model
from p2pml.ml.dask_job import materialise, run_job
from p2pml.ml.dask_pool import DaskPool
from p2pml.ml.dataset import parse_csv
from p2pml.ml.partition import derive_random_state, holdout_indices
from p2pml.ml.pool import TrainingPool
from p2pml.ml.trainer import Trainer
from p2pml.ml.verify import ResultClaim
from p2pml.ml.worker import THREAD_ENV, TrainRequest
from tests.framework.waiting import wait_until

from .conftest import DirStore
from .test_ml_training import ALICE, SEED, TASK, make_spec

pytestmark = pytest.mark.asyncio(loop_scope="module")


def cluster_kwargs(**kw: Any) -> dict[str, Any]:
    """Every listener on 127.0.0.1, ephemeral ports, no fixed dashboard port."""
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "processes": True,
        "n_workers": 2,
        "threads_per_worker": 1,
        "dashboard_address": "127.0.0.1:0",
        "asynchronous": True,
        "env": THREAD_ENV,
    }
    base.update(kw)
    return base


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> AsyncIterator[LocalCluster]:
    async with LocalCluster(**cluster_kwargs()) as c:
        yield c


def settings(address: str, **kw: Any) -> TrainingSettings:
    opts: dict[str, Any] = {
        "enabled": True,
        "workers": 1,
        "max_concurrent_jobs": 2,
        "max_job_seconds": 120.0,
        "executor": "dask",
        "dask_scheduler": address,
    }
    opts.update(kw)
    return TrainingSettings(**opts)


@pytest_asyncio.fixture(loop_scope="module")
async def dask_pool(cluster: LocalCluster) -> AsyncIterator[DaskPool]:
    s = settings(cluster.scheduler_address)
    p = DaskPool(s, fallback=TrainingPool(1, s.worker_memory_mb))
    assert await p.connect()
    await wait_until(lambda: p._threads() == 2, 30, what="two worker threads")
    yield p
    await p.close()


def fitted_state(model: Any) -> list[tuple[str, bytes]]:
    """Every fitted attribute (name ends in ``_``) as bytes, arrays bit for bit."""

    def raw(v: Any) -> bytes:
        if isinstance(v, np.ndarray):
            return v.dtype.str.encode() + repr(v.shape).encode() + v.tobytes()
        if isinstance(v, (list, tuple)):
            return b"[" + b",".join(raw(x) for x in v) + b"]"
        return repr(v).encode()

    return [(k, raw(v)) for k, v in sorted(vars(model).items()) if k.endswith("_")]


async def worker_pids(client: Client) -> dict[str, int]:
    return dict(await client.run(os.getpid))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cluster_listens_on_loopback_only(cluster: LocalCluster) -> None:
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    listening = [
        c.laddr
        for p in procs
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert len(listening) >= 5  # scheduler, its HTTP server, 2 nannies, 2 workers
    assert all(a.ip == "127.0.0.1" for a in listening), listening
    assert all(a.port != 8787 for a in listening)  # no fixed dashboard port


async def test_same_bits_on_dask_and_local_pool(
    tmp_path: Path, pool: TrainingPool, dask_pool: DaskPool, data_dir: Path
) -> None:
    store = DirStore(tmp_path / "store")
    cid = await store.add(data_dir / "wine.csv")
    params = {"hidden_layer_sizes": (16,), "max_iter": 60}
    spec = make_spec(cid, "mlp_classifier", "target", "log_loss", params)
    s = settings("tcp://127.0.0.1:1")
    outs = []
    for p, name in ((pool, "local"), (dask_pool, "dask")):
        trainer = Trainer(store, p, s, tmp_path / f"parsed-{name}")
        outs.append(await trainer.train_round(spec, TASK, SEED, ALICE, 1))
    assert dask_pool.jobs_on_cluster == 1 and dask_pool.jobs_on_local == 0
    local, dask = outs
    assert (dask.metric, dask.train_rows) == (local.metric, local.train_rows)
    # The same model bytes: every array the artifact stores, and every fitted
    # attribute once loaded (skops names members by id() and stamps the zip
    # with the time, so the containers' own bytes differ between any two runs).
    data = parse_csv(data_dir / "wine.csv", spec.kind, "target", (), 10**9)
    hold = holdout_indices(SEED, TASK, data.n_rows, spec.holdout_fraction)
    rs = derive_random_state(SEED, TASK, ALICE, 1)
    arrays, states, preds = [], [], []
    for out in outs:
        artifact = (await store.fetch(out.model_cid)).read_bytes()
        with zipfile.ZipFile(io.BytesIO(artifact)) as z:
            arrays.append(sorted(z.read(n) for n in z.namelist() if n.endswith(".npy")))
        model = load_model(artifact, spec.model, params, rs)
        states.append(fitted_state(model))
        preds.append(model.predict_proba(data.X[hold]).tobytes())
    assert arrays[0] == arrays[1] and len(arrays[0]) >= 4  # 2 layers: coefs + intercepts
    assert states[0] == states[1]
    # ...and the same holdout predictions, bit for bit.
    assert preds[0] == preds[1]
    # The audit (a re-training on a Dask worker) reproduces the local result.
    trainer = Trainer(store, dask_pool, s, tmp_path / "parsed-verify")
    artifact = (await store.fetch(local.model_cid)).read_bytes()
    claim = ResultClaim(spec, TASK, SEED, ALICE, 1, artifact, local.metric, local.train_rows, True)
    await trainer.verify(claim)
    with pytest.raises(ValidationError) as e:  # a false claim is refused there too
        await trainer.verify(ResultClaim(spec, TASK, SEED, ALICE, 1, artifact, 0.001))
    assert e.value.reason == "bad-result-metric"


async def test_dataset_scattered_once_per_cid_and_checked_on_workers(
    tmp_path: Path, dask_pool: DaskPool, data_dir: Path
) -> None:
    store = DirStore(tmp_path / "store")
    cid = await store.add(data_dir / "diabetes.csv")
    spec = make_spec(cid, "ridge", "target", "r2", {"alpha": 0.5})
    trainer = Trainer(store, dask_pool, settings("tcp://127.0.0.1:1"), tmp_path / "parsed")
    before = dask_pool.scatters
    outs = await asyncio.gather(
        *(trainer.train_round(spec, TASK, SEED, ALICE, r) for r in range(4))
    )
    assert len({o.model_cid for o in outs}) == 4  # four rounds, four partitions
    assert dask_pool.scatters == before + 1
    client = dask_pool._client
    assert f"p2pml-dataset-{cid}" in await client.who_has()
    # Each worker that ran a round holds its own checked copy under the CID.
    copies = await client.run(
        lambda dask_worker: (Path(dask_worker.local_directory) / "p2pml/datasets" / cid).is_file()
    )
    assert any(copies.values())


async def test_tampered_dataset_bytes_are_refused_on_the_worker(
    tmp_path: Path, dask_pool: DaskPool, data_dir: Path
) -> None:
    # A dataset no worker has seen yet (the others may hold diabetes already).
    csv = (data_dir / "diabetes.csv").read_bytes() + b"0,0,0,0,0,0,0,0,0,0,1\n"
    real = cid_of_bytes(csv)
    tampered = csv.replace(b"0", b"1")
    with pytest.raises(ValueError, match="hash to"):
        materialise(tmp_path / "d", real, tampered)
    assert not (tmp_path / "d" / real).exists()
    # Through the cluster: bytes that are not the CID's never reach a job.
    spec = make_spec(real, "ridge", "target", "r2", {})
    req = TrainRequest(spec, TASK, SEED, ALICE, 0, "/nonexistent", "/nonexistent", 10**9)
    reply = await dask_pool._client.submit(run_job, "train", req, tampered, None, None, pure=False)
    assert reply[0] == "err" and reply[2] == "dataset-mismatch"


async def test_job_timeout_restarts_the_worker_and_the_pool_goes_on(
    dask_pool: DaskPool, cluster: LocalCluster
) -> None:
    client = dask_pool._client
    before = await worker_pids(client)
    with pytest.raises(TrainingError) as e:
        await dask_pool.run("sleep", 60.0, 2.0)
    assert e.value.reason == "job-timeout"
    # The worker that ran it was restarted: one new process, one untouched.
    await wait_until(
        lambda: dask_pool._threads() == 2, 60, what="both workers back after the restart"
    )
    after = await worker_pids(client)
    assert len(set(before.values()) & set(after.values())) == 1
    assert await dask_pool.run("sleep", 0.1, 30) == 0.1
    assert dask_pool.fallbacks == 0


async def test_time_limit_counts_from_the_start_not_the_queue(dask_pool: DaskPool) -> None:
    # Both workers busy for 4 s; a 0.5 s job behind them with a 2.5 s limit
    # waits longer than its limit in the queue, and must still pass.
    blockers = [asyncio.create_task(dask_pool.run("sleep", 4.0, 120)) for _ in range(2)]
    await wait_until(lambda: _busy_workers(dask_pool, 2), 30, what="both workers busy")
    assert await dask_pool.run("sleep", 0.5, 2.5) == 0.5
    assert await asyncio.gather(*blockers) == [4.0, 4.0]


async def _busy_workers(pool: DaskPool, n: int) -> bool:
    processing = await pool._client.processing()
    return sum(1 for keys in processing.values() if keys) >= n


async def test_worker_killed_mid_job_the_job_still_finishes(dask_pool: DaskPool) -> None:
    client = dask_pool._client
    pids = await worker_pids(client)
    job = asyncio.create_task(dask_pool.run("sleep", 3.0, 120))

    async def running_on() -> str | None:
        busy = [a for a, keys in (await client.processing()).items() if keys]
        return busy[0] if busy else None

    await wait_until(running_on, 30, what="the job on a worker")
    victim = pids[await running_on()]
    os.kill(victim, signal.SIGKILL)
    assert await job == 3.0  # rescheduled by Dask, or run again by the node
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == "zombie"
    await wait_until(lambda: dask_pool._threads() == 2, 60, what="the nanny's new worker")


async def test_memory_over_the_limit_is_reported(cluster: LocalCluster) -> None:
    s = settings(cluster.scheduler_address, worker_memory_mb=400)
    p = DaskPool(s, fallback=TrainingPool(1))
    try:
        assert await p.connect()
        with pytest.raises(TrainingError) as e:
            await p.run("alloc", 600, 60)
        assert e.value.reason == "worker-memory-limit"
        assert await p.run("alloc", 8, 60) == 8 * 1024 * 1024
    finally:
        await p.close()


async def test_threads_pinned_on_dask_workers(dask_pool: DaskPool) -> None:
    info = await dask_pool.run("info", None, 60)
    # The nanny execs workers with OpenBLAS/MKL/OpenMP pinned (Dask's own
    # pre-spawn environment); the task sets the rest and threadpoolctl pins
    # the loaded pools at runtime.
    pre_spawn = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    assert {k: info["exec_env"].get(k) for k in pre_spawn} == dict.fromkeys(pre_spawn, "1")
    assert info["env"] == THREAD_ENV
    assert info["pools"] and all(n == 1 for _, n in info["pools"])
    view = dask_pool.describe()
    assert view["executor"] == "dask" and view["state"] == "connected"
    # The node's worker plugin turned Dask's 100 Hz profiler off on every worker.
    profiling = await dask_pool._client.run(
        lambda dask_worker: "profile" in dask_worker.periodic_callbacks
    )
    assert len(profiling) == 2 and not any(profiling.values())


async def test_scheduler_down_at_start_then_up() -> None:
    port = free_port()
    s = settings(f"tcp://127.0.0.1:{port}")
    p = DaskPool(s, fallback=TrainingPool(1))
    keeper = asyncio.create_task(p.keep_connected(reconnect=0.5, refresh=0.2))
    try:
        await wait_until(lambda: p.state == "unreachable", 30, what="a failed connection")
        assert p.describe()["reason"]
        # Jobs run on the local pool meanwhile.
        assert await p.run("sleep", 0.1, 60) == 0.1
        assert (p.jobs_on_local, p.jobs_on_cluster, p.fallbacks) == (1, 0, 0)
        async with LocalCluster(**cluster_kwargs(n_workers=1, scheduler_port=port)):
            await wait_until(lambda: p.connected, 60, what="the node to find the scheduler")
            await wait_until(lambda: len(p.describe()["workers"]) == 1, 30, what="its worker")
            assert await p.run("sleep", 0.1, 60) == 0.1
            assert p.jobs_on_cluster == 1
    finally:
        keeper.cancel()
        await p.close()


async def test_cluster_gone_mid_job_runs_it_on_the_local_pool() -> None:
    cl = await LocalCluster(**cluster_kwargs(n_workers=1))
    s = settings(cl.scheduler_address)
    p = DaskPool(s, fallback=TrainingPool(1))
    try:
        assert await p.connect()
        await wait_until(lambda: p._threads() == 1, 30, what="the worker")
        job = asyncio.create_task(p.run("sleep", 3.0, 120))
        client = p._client
        await wait_until(
            lambda: _busy(client), 30, what="the job on the cluster's worker", interval=0.1
        )
        await cl.close()
        assert await job == 3.0
        assert (p.fallbacks, p.jobs_on_local) == (1, 1)
        await wait_until(lambda: not p.connected, 30, what="the client to notice")
    finally:
        await p.close()
        await cl.close()


async def _busy(client: Client) -> bool:
    return any(keys for keys in (await client.processing()).values())
