"""The task a Dask worker runs for the node: one job of the fixed table.

Runs inside a ``dask.distributed`` worker process, in one of its threads.
It gets the job name, the request the local pool would get, and, for jobs
on a dataset, the dataset's bytes as a Dask dependency (scattered by the
node once per CID; moved between workers by Dask, never re-read from IPFS).
It writes the bytes to the worker's local directory under their CID, after
checking that they hash to it (a file is only ever renamed into place after
the check), points the request at that copy and a parsed cache beside it,
and calls :func:`p2pml.ml.pool.execute`: the same function the local pool
runs, so the result is the same bits.

Limits, per job (see docs/dask.md): BLAS/OpenMP pinned to one thread
(``threadpoolctl``; the nanny also exports the thread variables before the
worker imports numpy); with one thread per worker, a CPU-time limit on the
process while the job runs (SIGXCPU ends the worker; its nanny restarts it);
a resident-memory check: a job during which the worker's peak RSS went
over the node's ``worker_memory_mb`` is failed as ``worker-memory-limit``
(the kernel's exact high-water mark with one thread per worker; sampled
otherwise).
The hard memory cap is the Dask worker's own ``memory_limit``.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import threading
from pathlib import Path
from typing import Any, Final

#: Event topic on which a task tells the node it started (its time limit starts then).
STARTED_TOPIC: Final = "p2pml-job-started"
#: Dataset copies a worker keeps (least recently used removed first); the
#: node keeps as many scattered.
DATASETS_KEPT: Final = 4
#: Seconds between RSS samples of the job-level memory check (only where the
#: kernel's exact peak cannot be used: several threads a worker).
MEMORY_SAMPLE_SECONDS: Final = 0.05
_PAGE = os.sysconf("SC_PAGE_SIZE")


def dataset_cid(request: Any) -> str | None:
    """The CID of the dataset a request reads (None: a job without data)."""
    spec = getattr(request, "spec", None) or getattr(getattr(request, "claim", None), "spec", None)
    if spec is None or not hasattr(request, "dataset_path"):
        return None
    return str(spec.dataset_cid)


def run_job(
    job: str,
    request: Any,
    dataset: bytes | None,
    cpu_seconds: float | None,
    memory_mb: int | None,
) -> tuple[Any, ...]:
    """One job on this worker: the :func:`p2pml.ml.pool.execute` reply tuple."""
    from distributed import get_worker
    from threadpoolctl import threadpool_limits

    from p2pml.ml.pool import MEMORY_LIMIT, execute
    from p2pml.ml.worker import THREAD_ENV

    os.environ.update(THREAD_ENV)
    worker = get_worker()
    worker.log_event(STARTED_TOPIC, worker.get_current_task())
    cid = dataset_cid(request)
    if cid is not None:
        if dataset is None:
            return ("err", "TrainingError", "job-failed", f"{job}: no dataset bytes sent")
        root = Path(worker.local_directory) / "p2pml"
        try:
            path = materialise(root / "datasets", cid, dataset)
        except ValueError as e:
            return ("err", "TrainingError", "dataset-mismatch", str(e))
        request = dataclasses.replace(
            request, dataset_path=str(path), cache_dir=str(root / "parsed")
        )
    one_thread = worker.state.nthreads == 1
    watch = _PeakRss(memory_mb, exclusive=one_thread)
    with threadpool_limits(limits=1), watch:
        if one_thread and cpu_seconds is not None:
            from p2pml.oslimits import limit_cpu_for_job

            limit_cpu_for_job(cpu_seconds)
        try:
            reply = execute(job, request)
        finally:
            if one_thread and cpu_seconds is not None:
                _unlimit_cpu()  # an idle worker's own threads must not hit it later
    if watch.over:
        return (
            "err",
            "TrainingError",
            MEMORY_LIMIT,
            f"{job} job: worker resident memory {watch.peak_mb} MiB > {memory_mb} MiB",
        )
    return reply


def materialise(directory: Path, cid: str, data: bytes) -> Path:
    """``directory/cid`` holding ``data``, written once after checking the CID."""
    from p2pml.ipfs.cid import cid_of_bytes

    path = directory / cid
    if path.exists():  # only ever renamed into place after the check below
        os.utime(path)  # recently used
        return path
    got = cid_of_bytes(data)
    if got != cid:
        raise ValueError(f"dataset bytes hash to {got}, not {cid}")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{cid}.{os.getpid()}.{threading.get_ident()}"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    _evict(directory, keep=path)
    return path


def _evict(directory: Path, keep: Path) -> None:
    """Remove all but the ``DATASETS_KEPT`` most recently used copies."""
    copies = []
    for p in directory.iterdir():
        if p.name.startswith(".") or p == keep:
            continue
        try:
            copies.append((p.stat().st_mtime, p))
        except FileNotFoundError:  # another thread's eviction
            continue
    copies.sort(reverse=True)
    for _, old in copies[DATASETS_KEPT - 1 :]:
        old.unlink(missing_ok=True)


def _unlimit_cpu() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * _PAGE


def _hwm_bytes() -> int:
    """The kernel's peak resident set of this process (VmHWM)."""
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _hwm_bytes()
    except OSError:
        return False
    return True


class _PeakRss:
    """This process's peak RSS while a job runs.

    A job's allocation can come and go between two samples (a 600 MiB
    buffer filled and freed in 30 ms), so where the job has the process to
    itself the kernel's high-water mark is reset at the start and read at
    the end: exact, and no thread. A worker with several threads runs jobs
    side by side, and one job's reset would hide another's peak: there a
    sampling thread is the best available (a peak shorter than
    ``MEMORY_SAMPLE_SECONDS`` can be missed; the hard cap is still Dask's
    ``memory_limit``).
    """

    def __init__(self, memory_mb: int | None, *, exclusive: bool) -> None:
        self.limit = None if memory_mb is None else memory_mb * 1024 * 1024
        self.peak = 0
        self._exclusive = exclusive
        self._hwm = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def over(self) -> bool:
        return self.limit is not None and self.peak > self.limit

    @property
    def peak_mb(self) -> int:
        return self.peak // (1024 * 1024)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _rss_bytes())
            if self._stop.wait(MEMORY_SAMPLE_SECONDS):
                return

    def __enter__(self) -> _PeakRss:
        if self.limit is None:
            return self
        self._hwm = self._exclusive and _reset_hwm()
        if not self._hwm:
            self._thread = threading.Thread(target=self._sample, name="p2pml-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hwm:
            self.peak = _hwm_bytes()
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())
