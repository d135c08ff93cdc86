#!/usr/bin/env python3
"""Build the federated aggregation vectors from docs/federated.md, not the code.

Standard library only (struct, hashlib, math), never importing p2pml or numpy:
a second reading of docs/federated.md sections 3, 4, 5.1 and 6 that
p2pml.federated must agree with bit for bit
(tests/unit/federated/test_federated_vectors.py checks it). Python floats are
binary64 with round-to-nearest and no fused multiply-add, as the page demands.
DP noise is each participant's secret (section 7), so the DP cases start from
published (already noisy) updates.

    python tests/vectors/federated/make_federated_vectors.py [OUT_DIR]

Floats are JSON numbers (shortest round-trip text of the binary64 value);
bytes are lowercase hex.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

SIZES = {  # docs/federated.md section 3
    "sgd_classifier": lambda d, k: (k if k > 2 else 1) * (d + 1),
    "logistic_regression": lambda d, k: (k if k > 2 else 1) * (d + 1),
    "sgd_regressor": lambda d, k: d + 1,
    "gaussian_nb": lambda d, k: k * (1 + 2 * d),
    "linear_regression": lambda d, k: (d + 1) * (d + 1) + (d + 1),
    "ridge": lambda d, k: (d + 1) * (d + 1) + (d + 1),
}
MLPS = ("mlp_classifier", "mlp_regressor")


def units(d: int, k: int, hidden: list[int]) -> list[int]:
    """Section 3: inputs, hidden layers, outputs (K for K > 2 classes, else 1)."""
    return [d, *hidden, k if k > 2 else 1]


def size(name: str, d: int, k: int, hidden: list[int]) -> int:
    if name in MLPS:
        u = units(d, k, hidden)
        return sum(a * b for a, b in itertools.pairwise(u)) + sum(u[1:])
    return SIZES[name](d, k)


def mlp_initial(d: int, k: int, hidden: list[int], seed: bytes, logistic: bool) -> list[float]:
    """Section 5.1: Glorot-uniform from SHAKE-256(domain || task seed)."""
    n = size("mlp_classifier", d, k, hidden)
    stream = hashlib.shake_256(b"p2pml/fed-mlp-init/v1" + seed).digest(8 * n)
    u = units(d, k, hidden)
    factor = 2.0 if logistic else 6.0
    bounds = [math.sqrt(factor / (a + b)) for a, b in itertools.pairwise(u)]
    pairs = list(itertools.pairwise(u))
    scale = [bd for (a, b), bd in zip(pairs, bounds, strict=True) for _ in range(a * b)]
    scale += [bd for (_, b), bd in zip(pairs, bounds, strict=True) for _ in range(b)]
    out = []
    for j in range(n):
        x = int.from_bytes(stream[8 * j : 8 * j + 8], "big")
        out.append((2.0 * ((x >> 11) * 2.0**-53) - 1.0) * scale[j])
    return out


def encoding(name: str, d: int, k: int, v: list[float], hidden: list[int] | None = None) -> bytes:
    """Section 4: header, then float64 little-endian with -0.0 made +0.0."""
    hidden = hidden or []
    assert len(v) == size(name, d, k, hidden)
    head = b"P2FL" + bytes([1, len(name)]) + name.encode("ascii") + struct.pack(">II", d, k)
    if name in MLPS:
        head += bytes([len(hidden)]) + b"".join(struct.pack(">I", h) for h in hidden)
    return head + struct.pack(f"<{len(v)}d", *[x + 0.0 for x in v])


def numbers(label: str, n: int, scale: float) -> list[float]:
    """Deterministic awkward floats: SHA-256 counter bytes as uniform [-1, 1) times scale."""
    out = []
    for i in range(n):
        h = hashlib.sha256(f"{label}/{i}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2.0**64
        out.append((2.0 * u - 1.0) * scale * (1.0 + i % 7) / 3.0)
    return out


def clip(delta: list[float], bound: float) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in delta))
    if norm <= bound:
        return delta
    factor = bound / norm
    return [x * factor for x in delta]


def aggregate(case: dict[str, Any]) -> list[float]:
    """Section 6, steps 1-6."""
    g = case["global"]
    ups = sorted(case["updates"], key=lambda u: bytes.fromhex(u["participant"]))
    rule, m = case["rule"], len(ups)
    if rule == "sum":
        acc = [0.0] * len(g)
        for u in ups:
            acc = [a + x for a, x in zip(acc, u["vector"], strict=True)]
        return [a + 0.0 for a in acc]
    deltas = [[w - gi for w, gi in zip(u["vector"], g, strict=True)] for u in ups]
    z = case["noise_multiplier"]
    if z > 0:  # local DP: the published bound C (1 + z (sqrt(size) + 6))
        bound = case["clip"] * (1.0 + z * (math.sqrt(float(len(g))) + 6.0))
        deltas = [clip(dl, bound) for dl in deltas]
    elif case["clip"] is not None:
        deltas = [clip(dl, case["clip"]) for dl in deltas]
    if rule == "fedavg":
        total = sum(u["n_samples"] for u in ups)
        weights = [1.0 / m] * m if z > 0 else [u["n_samples"] / total for u in ups]
        combined = [0.0] * len(g)
        for w, dl in zip(weights, deltas, strict=True):
            combined = [c + w * x for c, x in zip(combined, dl, strict=True)]
    else:
        combined = []
        for i in range(len(g)):
            col = sorted(dl[i] for dl in deltas)
            if rule == "median":
                combined.append(col[m // 2] if m % 2 else (col[m // 2 - 1] + col[m // 2]) / 2.0)
            else:
                t = min(case["trim"], (m - 1) // 2)
                acc = 0.0
                for x in col[t : m - t]:
                    acc = acc + x
                combined.append(acc / float(m - 2 * t))
    return [gi + c + 0.0 for gi, c in zip(g, combined, strict=True)]


def case(
    label: str,
    name: str,
    d: int,
    k: int,
    rule: str,
    m: int,
    clip_c: float | None,
    trim: int = 0,
    z: float = 0.0,
    hidden: list[int] | None = None,
) -> dict[str, Any]:
    hidden = hidden or []
    n_values = size(name, d, k, hidden)
    if name == "gaussian_nb":  # whole counts summing to n, non-negative squares
        g = [0.0] * n_values
        updates = []
        for j in range(m):
            counts = [float(3 + j + c) for c in range(k)]
            sums = numbers(f"{label}/s/{j}", k * d, 40.0)
            squares = [abs(x) * 9.0 for x in numbers(f"{label}/q/{j}", k * d, 40.0)]
            updates.append((counts + sums + squares, int(sum(counts))))
    else:
        g = numbers(f"{label}/g", n_values, 1.0)
        updates = [
            (
                [gi + x for gi, x in zip(g, numbers(f"{label}/u/{j}", n_values, 0.5), strict=True)],
                10 + 7 * j,
            )
            for j in range(m)
        ]
        if m >= 5:  # one attacker: -10x its delta (under DP: 1000x, beyond the published bound)
            v, n = updates[0]
            factor = 1000.0 if z > 0 else 10.0
            updates[0] = ([gi - factor * (x - gi) for gi, x in zip(g, v, strict=True)], n)
    keys = [hashlib.sha256(f"{label}/key/{j}".encode()).hexdigest() for j in range(m)]
    c: dict[str, Any] = {
        "label": label,
        "estimator": name,
        "n_features": d,
        "n_classes": k,
        "rule": rule,
        "trim": trim,
        "clip": clip_c,
        "noise_multiplier": z,
        "hidden": hidden,
        "global": g,
        "updates": [
            {
                "participant": key,
                "vector": [x + 0.0 for x in v],
                "n_samples": n,
                "encoding": encoding(name, d, k, v, hidden).hex(),
            }
            for key, (v, n) in zip(keys, updates, strict=True)
        ],
    }
    result = aggregate(c)
    c["result"] = result
    c["result_encoding"] = encoding(name, d, k, result, hidden).hex()
    c["result_hash"] = hashlib.sha256(encoding(name, d, k, result, hidden)).hexdigest()
    return c


# RDP orders of docs/federated.md section 7.3.
ORDERS = (
    [1.0 + x / 10.0 for x in range(1, 100)] + [float(x) for x in range(11, 64)] + [128.0, 256.0]
)


def epsilon_full_rate(z: float, rounds: int, delta: float) -> float:
    """Section 7.3 with q = 1: R rounds of the Gaussian mechanism of noise
    multiplier z / 2, RDP R a / (2 sigma^2) at order a, converted to epsilon at
    delta (the improved conversion; the KL case gives 0), minimised over the
    orders (first minimum), rounded up to 6 decimals."""
    sigma = z / 2.0
    best = math.inf
    for a in ORDERS:
        r = 0.0 + rounds * (a / (2 * sigma**2))
        if delta**2 + math.expm1(-r) > 0:
            eps = 0.0
        elif a > 1.01:
            eps = r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        else:
            eps = math.inf
        best = min(best, eps)
    return math.ceil(max(0.0, best) * 10**6) / 10**6


def vectors() -> dict[str, Any]:
    return {
        "epsilon": [
            {
                "noise_multiplier": z,
                "sampling_rate": 1.0,
                "rounds": rounds,
                "delta": delta,
                "epsilon": epsilon_full_rate(z, rounds, delta),
            }
            for z, rounds, delta in (
                (4.0, 1, 1e-5),
                (4.0, 4, 1e-5),
                (1.0, 30, 1e-5),
                (3.0, 30, 1e-5),
                (25.6, 10, 1e-5),
                (0.7, 64, 1e-6),
                (100.0, 1, 0.5),
            )
        ],
        "cases": [
            case("fedavg", "sgd_classifier", 3, 3, "fedavg", 4, None),
            case("fedavg-clipped", "sgd_classifier", 4, 2, "fedavg", 5, 0.75),
            case("median-odd", "sgd_regressor", 6, 0, "median", 5, 2.0),
            case("median-even", "logistic_regression", 2, 4, "median", 4, 10.0),
            case("trimmed-mean", "sgd_classifier", 3, 5, "trimmed_mean", 5, 1.5, trim=1),
            case("trimmed-mean-short", "sgd_regressor", 3, 0, "trimmed_mean", 4, 2.0, trim=2),
            case("nb-sum", "gaussian_nb", 2, 3, "sum", 3, None),
            case("dp-fedavg", "sgd_classifier", 4, 3, "fedavg", 5, 0.75, z=2.0),
            case("dp-median", "sgd_regressor", 5, 0, "median", 5, 0.5, z=1.5),
            case("mlp-fedavg", "mlp_classifier", 3, 3, "fedavg", 3, None, hidden=[4, 2]),
            case("mlp-binary", "mlp_classifier", 2, 2, "trimmed_mean", 5, 3.0, 1, hidden=[3]),
            case("mlp-regressor", "mlp_regressor", 3, 0, "fedavg", 2, 1.0, hidden=[2]),
        ],
        "mlp_initial": [
            {
                "estimator": "mlp_classifier",
                "n_features": d,
                "n_classes": k,
                "hidden": hidden,
                "activation": activation,
                "task_seed": seed.hex(),
                "vector": mlp_initial(d, k, hidden, seed, activation == "logistic"),
            }
            for d, k, hidden, activation, seed in (
                (3, 4, [5], "relu", hashlib.sha256(b"mlp seed 1").digest()),
                (2, 2, [3, 2], "logistic", hashlib.sha256(b"mlp seed 2").digest()),
            )
        ],
        "decode_layout": {"estimator": "sgd_regressor", "n_features": 1, "n_classes": 0},
        "decode_refusals": [
            {
                "what": "short",
                "reason": "bad-update-shape",
                "bytes": encoding("sgd_regressor", 1, 0, [1.0, 2.0])[:-1].hex(),
            },
            {
                "what": "other estimator",
                "reason": "bad-update-shape",
                "bytes": encoding("ridge", 1, 0, [1.0] * 6).hex(),
            },
            {
                "what": "NaN",
                "reason": "bad-update-value",
                "bytes": (
                    encoding("sgd_regressor", 1, 0, [1.0, 2.0])[:-8] + struct.pack("<d", math.nan)
                ).hex(),
            },
            {
                "what": "negative zero",
                "reason": "bad-update-value",
                "bytes": (
                    encoding("sgd_regressor", 1, 0, [1.0, 2.0])[:-8] + struct.pack("<d", -0.0)
                ).hex(),
            },
        ],
        "gains": [
            {"score": a, "base": b, "higher_is_better": h, "gain": gain(a, b, h)}
            for a, b, h in (
                (0.75, 0.5, True),
                (0.5, 0.75, True),
                (0.5, 0.75, False),
                (0.9555555555555556, 0.0988888888888889, True),
                (0.1 + 0.2, 0.3, True),  # 5.5e-17 above: 0 micro-units
                (0.5000016, 0.5, True),
                (12.5, 30.25, False),
                (None, 0.5, True),
                (1e300, 0.0, True),
                (-1e308, 1e308, False),
            )
        ],
        "shares": [
            {"per_round": p, "gains": g, "samples": n, "shares": shares(p, g, n)}
            for p, g, n in (
                (500, [5, 0, 15], [1, 1, 1]),  # by gain: the zero update earns nothing
                (500, [0, 0, 0], [10, 20, 30]),  # nobody improved: by samples instead
                (500, [], [10, 20, 30]),  # by samples (an unparsable validation set)
                (45_000, [], [1, 1]),  # equal shares of a private task (weights 1)
                (90_001, [670_025, 0, 727_959], [1, 1, 1]),
            )
        ],
    }


def gain(score: float | None, base: float, higher_is_better: bool) -> int:
    """§11.4: max(0, floor(d * 10^6)) in binary64, capped at 2^53 - 1; 0 if unscored."""
    if score is None:
        return 0
    d = score - base if higher_is_better else base - score
    scaled = d * 1e6
    if scaled >= 2**53 - 1:
        return 2**53 - 1
    return max(0, math.floor(scaled))


def shares(per_round: int, gains: list[int], samples: list[int]) -> list[int]:
    """§11.5: floor(per_round * w / W); w the gain, or (no gains, or all 0)
    the sample count (1 each in a private task)."""
    weights = gains if any(gains) else samples
    total = sum(weights)
    return [per_round * w // total for w in weights]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    (out / "federated.json").write_text(json.dumps(vectors(), indent=1) + "\n")


if __name__ == "__main__":
    main()
