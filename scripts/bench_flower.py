#!/usr/bin/env python
"""p2pml's federated rounds side by side with Flower's FedAvg, in one run.

Same estimator (sgd_classifier, default params), same digits shards (IID and
Dirichlet 0.5, 5 participants), same local epochs and the same per-round
random states. p2pml: p2pml.federated's local step and aggregation. Flower
(PyPI ``flwr``, installed only into .cache/flwr-venv by this script, never a
dependency of p2pml): its FedAvg strategy over NumPyClient clients driven in
process by scripts/flower_side.py (its simulation engine needs Ray, which is
not installed), in a network namespace of its own when ``unshare -n`` works
(no route out at all), with FLWR_TELEMETRY_ENABLED=0 and
FLWR_DISABLE_UPDATE_CHECK=1 either way.

Prints accuracy after 1, 5 and 30 rounds, rounds to reach 95 % and to reach
centralised - 1 point, and bytes per round (every participant downloads the
global model and uploads its update).

    python scripts/bench_flower.py [--rounds 30] [--local-epochs 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_federated as bf

from p2pml.federated.aggregate import Rule
from p2pml.federated.encoding import encode
from p2pml.federated.layout import Layout
from p2pml.federated.params import initial_vector

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "flwr-venv"
FLWR = "flwr==1.42.0"


def flower_python() -> Path:
    """Flower's own venv, made on first use, with this venv's numpy and scikit-learn."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pins = [FLWR, f"numpy=={np.__version__}", f"scikit-learn=={sklearn.__version__}"]
    probe = "import flwr, numpy as n, sklearn as s; "
    probe += "print(flwr.__version__, n.__version__, s.__version__)"
    have = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    want = f"{FLWR.split('==')[1]} {np.__version__} {sklearn.__version__}"
    if have.stdout.strip() != want:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    return python


def random_states(m: int, rounds: int) -> list[Any]:
    """bench_federated.run's per-round random states (draw 0 keys)."""
    keys = [hashlib.sha256(b"participant %d" % i).digest() for i in range(m)]
    return [
        np.array(
            [
                int.from_bytes(hashlib.sha256(bf.SEED + k + r.to_bytes(4, "big")).digest()[:4])
                & 0x7FFF_FFFF
                for r in range(rounds)
            ],
            dtype=np.int64,
        )
        for k in keys
    ]


def first_at(curve: list[float], level: float) -> str:
    hit = next((r + 1 for r, a in enumerate(curve) if a >= level), None)
    return "never" if hit is None else str(hit)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--local-epochs", type=int, default=1)
    args = ap.parse_args()
    Xtr, ytr, Xte, yte = bf.data()
    classes = np.unique(ytr)
    est, params = "sgd_classifier", bf.PARAMS["sgd_classifier"]
    central = 100.0 * float((bf.centralised(est, params, Xtr, ytr).predict(Xte) == yte).mean())

    def score(model: Any) -> float:
        return 100.0 * float((model.predict(Xte) == yte).mean())

    layout = Layout(est, Xtr.shape[1], len(classes))
    model_bytes = len(encode(layout, initial_vector(layout, bf.SEED)))
    arrays: dict[str, Any] = {
        "classes": classes,
        "Xte": Xte,
        "yte": yte,
        "rounds": args.rounds,
        "epochs": args.local_epochs,
    }
    ours: dict[str, list[float]] = {}
    for split, fn in (("iid", bf.iid), ("skewed", bf.dirichlet)):
        shards = fn(Xtr, ytr)
        arrays[f"{split}_m"] = len(shards)
        for i, ((X, y), rs) in enumerate(
            zip(shards, random_states(len(shards), args.rounds), strict=True)
        ):
            arrays[f"{split}_X{i}"], arrays[f"{split}_y{i}"], arrays[f"{split}_rs{i}"] = X, y, rs
        ours[split], _ = bf.run(
            est, params, shards, classes, args.rounds, Rule(), score, None, args.local_epochs
        )
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    python = flower_python()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shards.npz"
        np.savez(path, **arrays)
        command = [str(python), str(ROOT / "scripts" / "flower_side.py"), str(path)]
        isolated = (
            shutil.which("unshare") is not None
            and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
        )
        if isolated:
            command = ["unshare", "-n", *command]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    flower = json.loads(done.stdout)
    print(f"digits, 5 participants, {est} default params, local epochs {args.local_epochs}")
    print(f"centralised {central:.2f} %; flwr {flower['flwr']} FedAvg driven in process", end="")
    print(" in its own network namespace (no route out)" if isolated else " (telemetry off)")
    m = len(bf.iid(Xtr, ytr))
    p2_bytes = 2 * m * model_bytes
    marks = [r for r in (1, 5, 30) if r <= args.rounds]
    for split in ("iid", "skewed"):
        rows = {
            "p2pml": ours[split],
            "flwr, plain client": flower[f"{split}/plain"]["curve"],
            "flwr, p2pml's clock": flower[f"{split}/clock"]["curve"],
        }
        print(f"\n{split}:")
        for name, curve in rows.items():
            cells = "  ".join(f"r{r}={curve[r - 1]:6.2f}" for r in marks)
            reach = f"reach 95 %: {first_at(curve, 95.0):>5s}"
            reach += f"  reach {central - 1.0:.2f} %: {first_at(curve, central - 1.0):>5s}"
            print(f"  {name:20s} {cells}  {reach}")
        fb = flower[f"{split}/plain"]["bytes_per_round"]
        print(f"  bytes per round: p2pml {p2_bytes} ({model_bytes} per model, {m} down + {m} up);")
        print(f"                   flwr {fb} ({flower[f'{split}/plain']['model_bytes']} per model)")


if __name__ == "__main__":
    main()
