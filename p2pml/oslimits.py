"""Operating-system limits of worker processes (Linux ``setrlimit``).

Every process that runs work a peer can shape (training, verification,
mining) gets an address-space limit: whatever a budget missed, a job cannot
take the machine's memory; it gets ``MemoryError`` (or dies) and its worker
is replaced. Training and verification workers also get a CPU-time limit per
job, a backstop to the pool's wall-clock timeout (SIGXCPU ends the process).

``RLIMIT_AS`` counts mapped address space, not resident memory: thread
stacks and allocator arenas reserve much more than they touch. That is why
the workers pin BLAS/OpenMP to one thread first (see ``p2pml.ml.worker``);
docs/tasks.md gives the measured idle size.
"""

from __future__ import annotations

import math
import resource

MIB = 1024 * 1024


def limit_memory(memory_mb: int | None) -> None:
    """Cap this process's address space at ``memory_mb`` MiB (None: unchanged).

    The hard limit is lowered too, so nothing in the process can lift it.
    """
    if memory_mb is None:
        return
    limit = memory_mb * MIB
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def cpu_seconds_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def limit_cpu_for_job(seconds: float) -> None:
    """Let this process use at most ``seconds`` more CPU (soft ``RLIMIT_CPU``;
    the kernel sends SIGXCPU past it). Reset before every job of a long-lived
    worker, since the limit counts the process's whole life."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(cpu_seconds_used() + seconds)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
