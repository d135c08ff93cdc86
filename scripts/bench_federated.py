#!/usr/bin/env python
"""Federated learning, in process (no network yet): accuracy vs rounds.

scikit-learn's digits (pixels / 16), a seeded 75/25 split; the training rows
go to 5 participants as IID shards or label-skewed ones (Dirichlet alpha 0.5
per class). Each round runs p2pml.federated's real local step and aggregation
(G_0, train_local, aggregate, model hash); the global model is scored on the
test rows next to a centralised fit of the same estimator on all training rows.

Issue 16's targets: within 1.0 point of centralised by round 5 (IID), within
3.0 by round 30 (skewed); also over 3 shard/seed draws. Then local DP (each
participant's own secret noise) at epsilon 1, 3 and 8 (delta 1e-5) next to
non-private, with the levers that move it (rounds, local epochs, local
sampling, participants); the robust rules with one participant sending -10x
its update or zeros, over 3 draws; and an MLP next to a centralised MLP.

    python scripts/bench_federated.py [--rounds 30] [--estimator sgd_classifier]
        [--sections curves,dp,robust,mlp]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits

from p2pml.chain.allowlist import ParamValue
from p2pml.federated.accountant import epsilon_spent, noise_for_epsilon
from p2pml.federated.aggregate import Rule, Update, aggregate
from p2pml.federated.encoding import model_hash
from p2pml.federated.layout import task_layout
from p2pml.federated.local import train_dp, train_local
from p2pml.federated.params import build, initial_vector
from p2pml.ml.estimators import estimator_class

PARTICIPANTS = 5
SEED = hashlib.sha256(b"bench-federated seed").digest()
DRAWS = 3  # shard splits and seeds for the figures quoted as mean (min..max)
PARAMS: dict[str, dict[str, ParamValue]] = {
    "sgd_classifier": {},
    "logistic_regression": {"max_iter": 5},
    # Adam's default step (0.001) with 2 minibatches per shard epoch is too slow
    # for 30 rounds (docs/federated.md section 10.4); 0.01 is the lever.
    "mlp_classifier": {"hidden_layer_sizes": (64,), "learning_rate_init": 0.01},
}
Shards = list[tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]]


def data() -> tuple[Any, Any, Any, Any]:
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    order = np.random.default_rng(0).permutation(len(y))
    cut = len(y) * 3 // 4
    train, test = order[:cut], order[cut:]
    return X[train], y[train].astype(np.int64), X[test], y[test].astype(np.int64)


def iid(X: Any, y: Any, draw: int = 0, participants: int = PARTICIPANTS) -> Shards:
    rng = np.random.default_rng(1 if draw == 0 else 100 + draw)
    parts = np.array_split(rng.permutation(len(y)), participants)
    return [(X[p], y[p]) for p in parts]


def dirichlet(X: Any, y: Any, alpha: float = 0.5) -> Shards:
    rng = np.random.default_rng(2)
    owners: list[list[int]] = [[] for _ in range(PARTICIPANTS)]
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        cuts = (np.cumsum(rng.dirichlet([alpha] * PARTICIPANTS))[:-1] * len(rows)).astype(int)
        for owner, part in enumerate(np.split(rows, cuts)):
            owners[owner].extend(part.tolist())
    return [(X[np.array(sorted(o))], y[np.array(sorted(o))]) for o in owners]


def run(
    estimator: str,
    params: Mapping[str, ParamValue],
    shards: Shards,
    classes: Any,
    rounds: int,
    rule: Rule,
    score: Callable[[Any], float],
    attack: Callable[[Any, Any], Any] | None = None,
    local_epochs: int = 1,
    seed: bytes = SEED,
    local_sampling: float = 1.0,
) -> tuple[list[float], bytes]:
    """Accuracy of G_1..G_rounds, and the last model hash. With a noise
    multiplier in ``rule``, every participant publishes :func:`train_dp`'s
    secretly sampled, clipped and noised update."""
    layout = task_layout(estimator, shards[0][0].shape[1], len(classes), params)
    g = initial_vector(layout, seed, params)
    # Draw 0 keeps the first slice's keys, so its figures compare before/after.
    prefix = b"" if seed == SEED else seed
    keys = [hashlib.sha256(prefix + b"participant %d" % i).digest() for i in range(len(shards))]
    curve = []
    for r in range(rounds):
        updates = []
        for i, (X, y) in enumerate(shards):
            rs = int.from_bytes(hashlib.sha256(seed + keys[i] + r.to_bytes(4, "big")).digest()[:4])
            kw: dict[str, Any] = {
                "round": r,
                "local_epochs": local_epochs,
                "random_state": rs & 0x7FFF_FFFF,
                "participants": len(shards),
            }
            if rule.noise_multiplier > 0:
                assert rule.clip is not None
                w = train_dp(
                    layout,
                    params,
                    g,
                    X,
                    y,
                    classes,
                    **kw,
                    clip_bound=rule.clip,
                    noise_multiplier=rule.noise_multiplier,
                    local_sampling=local_sampling,
                )
            else:
                w = train_local(layout, params, g, X, y, classes, **kw)
            if attack is not None and i == 0:
                w = attack(g, w)
            updates.append(Update(keys[i], w, len(y)))
        g = aggregate(layout, g, updates, rule)
        curve.append(score(build(layout, g, params, classes)))
    return curve, model_hash(layout, g)


def centralised(estimator: str, params: Mapping[str, ParamValue], X: Any, y: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=5 and MLPs at max_iter do not converge
        return estimator_class(estimator)(**dict(params), random_state=0).fit(X, y)


def draw_seed(draw: int) -> bytes:
    return SEED if draw == 0 else hashlib.sha256(b"bench-federated draw %d" % draw).digest()


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ({min(values):.2f}..{max(values):.2f})"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.Xtr, self.ytr, self.Xte, self.yte = data()
        self.classes = np.unique(self.ytr)

    def score(self, model: Any) -> float:
        return 100.0 * float((model.predict(self.Xte) == self.yte).mean())

    def curves(self, estimator: str, local_epochs: int) -> None:
        params = PARAMS[estimator]
        central = self.score(centralised(estimator, params, self.Xtr, self.ytr))
        print(f"\n{estimator} {params}, local epochs {local_epochs}: centralised {central:.2f} %")
        if params:
            plain = self.score(centralised(estimator, {}, self.Xtr, self.ytr))
            print(f"  (with scikit-learn's default params: centralised {plain:.2f} %)")
        rounds = self.args.rounds
        marks = [r for r in (1, 2, 3, 5, 10, 20, 30, 50) if r <= rounds]
        targets = {"IID": (5, 1.0), "skewed": (30, 3.0)}
        for name, split in (("IID", iid), ("skewed", dirichlet)):
            shards = split(self.Xtr, self.ytr)
            sizes = [len(s[1]) for s in shards]
            missing = [int(len(self.classes) - len(np.unique(s[1]))) for s in shards]
            t0 = time.perf_counter()
            curve, digest = run(
                estimator,
                params,
                shards,
                self.classes,
                rounds,
                Rule(),
                self.score,
                None,
                local_epochs,
            )
            elapsed = time.perf_counter() - t0
            print(f"  {name} shards {sizes} (classes missing per shard {missing}), fedavg:")
            print("    " + "  ".join(f"r{r}={curve[r - 1]:.2f}" for r in marks))
            at, within = targets[name]
            if at <= rounds:
                gap = central - curve[at - 1]
                verdict = "meets" if gap <= within else "MISSES"
                note = f"{gap:+.2f} points ({verdict} <= {within})"
                print(f"    gap to centralised at round {at}: {note}")
            per_round = elapsed / rounds * 1000
            print(f"    {per_round:.0f} ms per round in process; G hash {digest.hex()[:16]}")
        if estimator == "sgd_classifier" and rounds >= 5:
            gaps, r5s, centrals = [], [], []
            for draw in range(DRAWS):
                shards = iid(self.Xtr, self.ytr, draw)
                curve, _ = run(
                    estimator,
                    params,
                    shards,
                    self.classes,
                    5,
                    Rule(),
                    self.score,
                    None,
                    local_epochs,
                    draw_seed(draw),
                )
                model = estimator_class(estimator)(**dict(params), random_state=draw)
                c = self.score(model.fit(self.Xtr, self.ytr))
                r5s.append(curve[-1])
                centrals.append(c)
                gaps.append(c - curve[-1])
            print(f"  IID over {DRAWS} draws (split, seeds, centralised random_state):")
            print(f"    r5 {spread(r5s)}; centralised {spread(centrals)}; gap {spread(gaps)}")

    def dp(self) -> None:
        """Local DP: accuracy at epsilon 1, 3, 8 (delta 1e-5) and the levers."""

        est, params, clip_c, delta = "sgd_classifier", PARAMS["sgd_classifier"], 1.0, 1e-5
        print(f"\nlocal DP, {est}, IID, C={clip_c}, delta {delta:g}: each participant clips")
        print(
            "its delta and adds its own secret N(0, (zC)^2); accountant: z/2 per round, R rounds,"
        )
        print("Poisson local sampling q (final accuracy, mean over 3 runs: the noise is fresh):")
        configs = [  # (participants, rounds, local epochs, local sampling)
            (5, 10, 1, 1.0),
            (5, 3, 5, 1.0),
            (5, 1, 10, 1.0),
            (5, 3, 5, 0.2),
            (50, 3, 5, 1.0),  # (more participants cost seconds each: scikit-learn's overhead)
        ]
        for m, rounds, epochs, q in configs:
            shards = iid(self.Xtr, self.ytr, 0, m)
            base, _ = run(
                est,
                params,
                shards,
                self.classes,
                rounds,
                Rule(clip=clip_c),
                self.score,
                None,
                epochs,
            )
            cells = [f"no noise {base[-1]:6.2f}"]
            for eps in (1.0, 3.0, 8.0):
                z = noise_for_epsilon(eps, q, rounds, delta)
                spent = epsilon_spent(z, q, rounds, delta)
                assert spent <= eps
                finals = [
                    run(
                        est,
                        params,
                        shards,
                        self.classes,
                        rounds,
                        Rule(clip=clip_c, noise_multiplier=z),
                        self.score,
                        None,
                        epochs,
                        local_sampling=q,
                    )[0][-1]
                    for _ in range(3)
                ]
                cells.append(f"eps {eps:g} (z={z:.2f}) {np.mean(finals):6.2f}")
            print(f"  m={m:3d} R={rounds:2d} E={epochs:2d} q={q:.1f}: " + "  ".join(cells))

    def robust(self) -> None:
        est, params = "sgd_classifier", PARAMS["sgd_classifier"]
        rounds = self.args.rounds
        print(f"\nrobust rules, IID, C=10, participant 0 attacking, {DRAWS} draws;")
        print(f"accuracy at r{rounds} and the points lost to the attack (issue: at most 2):")
        attacks: dict[str, Callable[[Any, Any], Any] | None] = {
            "honest": None,
            "-10x": lambda g, w: g + -10.0 * (w - g),
            "zeros": lambda g, w: np.zeros_like(w),
        }
        rules = (
            Rule("fedavg"),
            Rule("median", clip=10.0),
            Rule("trimmed_mean", trim=1, clip=10.0),
        )
        for rule in rules:
            finals: dict[str, list[float]] = {label: [] for label in attacks}
            tails: dict[str, list[float]] = {label: [] for label in attacks}
            for draw in range(DRAWS):
                shards = iid(self.Xtr, self.ytr, draw)
                for label, attack in attacks.items():
                    curve, _ = run(
                        est,
                        params,
                        shards,
                        self.classes,
                        rounds,
                        rule,
                        self.score,
                        attack,
                        1,
                        draw_seed(draw),
                    )
                    finals[label].append(curve[-1])
                    tails[label].append(float(np.mean(curve[-10:])))
            for label in attacks:
                line = f"  {rule.name:13s} {label:7s} r{rounds} {spread(finals[label])}"
                if label != "honest":
                    lost = [h - a for h, a in zip(finals["honest"], finals[label], strict=True)]
                    tail = [h - a for h, a in zip(tails["honest"], tails[label], strict=True)]
                    line += f"  lost {spread(lost)}; over the last 10 rounds {spread(tail)}"
                print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--estimator", default="sgd_classifier", choices=sorted(PARAMS))
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--sections", default="curves,dp,robust,mlp")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # dp-accounting's absl notes on excluded RDP orders
    bench = Bench(args)
    sections = set(args.sections.split(","))
    print(f"digits: {len(bench.ytr)} training rows, {len(bench.yte)} test rows, ", end="")
    print(f"{PARTICIPANTS} participants")
    if "curves" in sections:
        bench.curves(args.estimator, args.local_epochs)
    if "dp" in sections:
        bench.dp()
    if "robust" in sections:
        bench.robust()
    if "mlp" in sections:
        for epochs in (1, 5):
            bench.curves("mlp_classifier", epochs)


if __name__ == "__main__":
    main()
