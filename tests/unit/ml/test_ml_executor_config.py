"""``[training] executor`` and the Dask options: checked at load, one line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pml.config import load_settings
from p2pml.errors import ConfigError
from p2pml.ml.dask_job import dataset_cid
from p2pml.ml.dask_pool import DaskPool
from p2pml.ml.executor import make_pool
from p2pml.ml.pool import TrainingPool


def load(tmp_path: Path, body: str) -> object:
    cfg = tmp_path / "node.toml"
    cfg.write_text("[training]\n" + body)
    return load_settings(cfg, env={})


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ('executor = "ray"', "[training] executor: 'ray': must be 'local' or 'dask'"),
        ('dask_scheduler = "127.0.0.1:8786"', "expected tcp://HOST:PORT or tls://HOST:PORT"),
        ('dask_scheduler = "udp://127.0.0.1:8786"', "expected tcp://HOST:PORT"),
        ('dask_scheduler = "tcp://127.0.0.1:99999"', "expected tcp://HOST:PORT"),
        ('dask_scheduler = "tcp://:8786"', "expected tcp://HOST:PORT"),
        ('dask_scheduler = "tls://127.0.0.1:8786"', "a tls:// scheduler needs the TLS options"),
        ('dask_tls_ca_file = "ca.pem"', "the Dask TLS options go together"),
        ("executor = 1", "[training] executor: expected a string, got 1"),
    ],
)
def test_bad_executor_config_is_one_clear_line(tmp_path: Path, body: str, expect: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, body)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_tls_files_must_exist(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "cert.pem").write_text("x")
    body = (
        f'dask_scheduler = "tls://127.0.0.1:8786"\ndask_tls_ca_file = "{tmp_path}/ca.pem"\n'
        f'dask_tls_client_cert = "{tmp_path}/cert.pem"\n'
        f'dask_tls_client_key = "{tmp_path}/key.pem"\n'
    )
    with pytest.raises(ConfigError, match=r"dask_tls_client_key: .*key\.pem.*: no such file"):
        load(tmp_path, body)
    (tmp_path / "key.pem").write_text("x")
    s = load(tmp_path, body + 'executor = "dask"\n')
    assert s.training.executor == "dask"  # type: ignore[attr-defined]


def test_the_executor_follows_the_config(tmp_path: Path) -> None:
    local = make_pool(load(tmp_path, "workers = 2").training)  # type: ignore[attr-defined]
    assert isinstance(local, TrainingPool) and local.workers == 2
    assert local.describe() == {"executor": "local", "workers": []}  # started at the first job
    dask = make_pool(load(tmp_path, 'executor = "dask"').training)  # type: ignore[attr-defined]
    assert isinstance(dask, DaskPool) and dask.address == "tcp://127.0.0.1:8786"
    view = dask.describe()
    assert (view["executor"], view["state"], view["workers"]) == ("dask", "not-connected", [])
    assert view["local"]["executor"] == "local"


def test_only_dataset_jobs_carry_a_cid() -> None:
    assert dataset_cid(None) is None and dataset_cid(2.5) is None


def test_worker_copies_are_checked_and_the_oldest_evicted(tmp_path: Path) -> None:
    import os

    from p2pml.ipfs.cid import cid_of_bytes
    from p2pml.ml.dask_job import DATASETS_KEPT, materialise

    blobs = [b"a,b\n%d,1\n" % i for i in range(DATASETS_KEPT + 2)]
    cids = [cid_of_bytes(b) for b in blobs]
    with pytest.raises(ValueError, match="hash to"):
        materialise(tmp_path, cids[0], blobs[1])
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    for i, (cid, blob) in enumerate(zip(cids, blobs, strict=True)):
        path = materialise(tmp_path, cid, blob)
        os.utime(path, (i, i))  # a clear order of use
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(cids[-DATASETS_KEPT:])
    assert (tmp_path / cids[-1]).read_bytes() == blobs[-1]
