"""The Dask job's memory check sees a peak that comes and goes between samples.

A job that fills and frees a buffer faster than the sampling interval went
unseen by the sampler (the CI failure of ``test_memory_over_the_limit_is_reported``);
with the worker's one thread the check reads the kernel's high-water mark.
"""

from __future__ import annotations

from p2pml.ml.dask_job import _hwm_bytes, _PeakRss, _reset_hwm, _rss_bytes

MIB = 1024 * 1024


def burst(mib: int) -> None:
    block = bytearray(mib * MIB)
    block[::4096] = b"x" * len(block[::4096])
    del block


def test_a_burst_shorter_than_a_sample_is_seen() -> None:
    limit_mb = _rss_bytes() // MIB + 100
    with _PeakRss(limit_mb, exclusive=True) as watch:
        burst(300)
    assert watch.over, watch.peak_mb
    assert watch.peak_mb >= limit_mb


def test_the_peak_before_the_job_does_not_count() -> None:
    burst(300)  # an earlier job's peak
    assert _hwm_bytes() > _rss_bytes() + 200 * MIB
    limit_mb = _rss_bytes() // MIB + 100
    with _PeakRss(limit_mb, exclusive=True) as watch:
        burst(10)
    assert not watch.over, watch.peak_mb


def test_without_a_limit_nothing_is_measured() -> None:
    with _PeakRss(None, exclusive=True) as watch:
        burst(10)
    assert watch.peak == 0 and not watch.over


def test_the_high_water_mark_can_be_reset_here() -> None:
    # The exact check depends on it; a kernel without it falls back to sampling.
    assert _reset_hwm()
