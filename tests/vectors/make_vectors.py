#!/usr/bin/env python3
"""Build p2pml's consensus test vectors from the documents, not the code.

Everything here follows docs/consensus.md, docs/protocol.md and docs/tasks.md
and uses the Python standard library only (hashlib, struct, json): a minimal
canonical msgpack encoder and Ed25519 (transcribed from RFC 8032, section 6)
are below. It must never import p2pml: the point is a second, independent
reading of the specification that the implementation has to agree with bit
for bit (tests/unit/chain/test_vectors.py checks both directions).

    python tests/vectors/make_vectors.py [OUT_DIR]   # default: this directory

A second implementation can use the JSON files directly: bytes are lowercase
hex, floats are JSON numbers (shortest round-trip form of the binary64 value).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

# -- canonical msgpack (docs/protocol.md section 3) ------------------------------


def mp(obj: Any) -> bytes:
    """Smallest encoding of every int, length and header; floats always float64."""
    if obj is None:
        return b"\xc0"
    if obj is True:
        return b"\xc3"
    if obj is False:
        return b"\xc2"
    if isinstance(obj, int):
        if 0 <= obj < 0x80:
            return bytes([obj])
        if -32 <= obj < 0:
            return struct.pack(">b", obj)
        if obj >= 0:
            for tag, fmt, hi in (
                (0xCC, ">B", 1 << 8),
                (0xCD, ">H", 1 << 16),
                (0xCE, ">I", 1 << 32),
            ):
                if obj < hi:
                    return bytes([tag]) + struct.pack(fmt, obj)
            return b"\xcf" + struct.pack(">Q", obj)
        for tag, fmt, lo in (
            (0xD0, ">b", -(1 << 7)),
            (0xD1, ">h", -(1 << 15)),
            (0xD2, ">i", -(1 << 31)),
        ):
            if obj >= lo:
                return bytes([tag]) + struct.pack(fmt, obj)
        return b"\xd3" + struct.pack(">q", obj)
    if isinstance(obj, float):
        return b"\xcb" + struct.pack(">d", obj)
    if isinstance(obj, str):
        raw = obj.encode("utf-8")
        return _head(len(raw), 0xA0, 32, (0xD9, 0xDA, 0xDB)) + raw
    if isinstance(obj, bytes):
        return _head(len(obj), None, 0, (0xC4, 0xC5, 0xC6)) + obj
    if isinstance(obj, list):
        return _head(len(obj), 0x90, 16, (None, 0xDC, 0xDD)) + b"".join(mp(v) for v in obj)
    if isinstance(obj, dict):
        # The one map (a task spec): keys in sorted order (docs/protocol.md).
        items = sorted(obj.items(), key=lambda kv: kv[0].encode("utf-8"))
        return _head(len(obj), 0x80, 16, (None, 0xDE, 0xDF)) + b"".join(
            mp(k) + mp(v) for k, v in items
        )
    raise TypeError(type(obj))


def _head(n: int, fix: int | None, fix_max: int, tags: tuple[int | None, int, int]) -> bytes:
    if fix is not None and n < fix_max:
        return bytes([fix | n])
    if tags[0] is not None and n < 1 << 8:
        return bytes([tags[0], n])
    if n < 1 << 16:
        return bytes([tags[1]]) + struct.pack(">H", n)
    return bytes([tags[2]]) + struct.pack(">I", n)


# -- Ed25519 (RFC 8032 section 6, transcribed) -------------------------------------

P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493


def _inv(x: int) -> int:
    return pow(x, P - 2, P)


D = -121665 * _inv(121666) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int, int, int]


def _add(p1: Point, p2: Point) -> Point:
    a = (p1[1] - p1[0]) * (p2[1] - p2[0]) % P
    b = (p1[1] + p1[0]) * (p2[1] + p2[0]) % P
    c = 2 * p1[3] * p2[3] * D % P
    d = 2 * p1[2] * p2[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f, g * h, f * g, e * h)


def _mul(s: int, pt: Point) -> Point:
    acc: Point = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            acc = _add(acc, pt)
        pt = _add(pt, pt)
        s >>= 1
    return acc


def _recover_x(y: int, sign: int) -> int:
    x2 = (y * y - 1) * _inv(D * y * y + 1)
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    assert (x * x - x2) % P == 0
    return P - x if (x & 1) != sign else x


_GY = 4 * _inv(5) % P
_GX = _recover_x(_GY, 0)
G: Point = (_GX, _GY, 1, _GX * _GY % P)


def _compress(pt: Point) -> bytes:
    zi = _inv(pt[2])
    x, y = pt[0] * zi % P, pt[1] * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _expand(seed: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def ed25519_public(seed: bytes) -> bytes:
    return _compress(_mul(_expand(seed)[0], G))


def ed25519_sign(seed: bytes, msg: bytes) -> bytes:
    a, prefix = _expand(seed)
    pub = _compress(_mul(a, G))
    r = int.from_bytes(hashlib.sha512(prefix + msg).digest(), "little") % Q
    rs = _compress(_mul(r, G))
    h = int.from_bytes(hashlib.sha512(rs + pub + msg).digest(), "little") % Q
    return rs + ((r + h * a) % Q).to_bytes(32, "little")


def _rfc8032_self_check() -> None:
    # RFC 8032 section 7.1, TEST 1 (empty message).
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    assert ed25519_public(seed).hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert ed25519_sign(seed, b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
        "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


# -- hashing, headers, blocks (docs/protocol.md section 3, docs/consensus.md) ---------


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def sha256d(b: bytes) -> bytes:
    return sha256(sha256(b))


def merkle_root(txids: list[bytes]) -> bytes:
    level = [sha256(b"\x00" + t) for t in txids]
    if not level:
        return bytes(32)
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def header_bytes(h: dict[str, Any]) -> bytes:
    return struct.pack(
        ">II32s32sQIQ",
        h["version"],
        h["height"],
        bytes.fromhex(h["prev_hash"]),
        bytes.fromhex(h["tx_root"]),
        h["time"],
        h["bits"],
        h["nonce"],
    )


def bits_to_target(bits: int) -> int | None:
    """None: bad-bits (sign bit set, zero, or not below 2^256)."""
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    if bits & 0x00800000:
        return None
    if exponent <= 3:
        target = mantissa >> (8 * (3 - exponent))
    else:
        target = mantissa << (8 * (exponent - 3))
    return target if 0 < target < 2**256 else None


def target_to_bits(target: int) -> int:
    size = (target.bit_length() + 7) // 8
    mantissa = target << (8 * (3 - size)) if size <= 3 else target >> (8 * (size - 3))
    if mantissa & 0x00800000:
        mantissa >>= 8
        size += 1
    return (size << 24) | mantissa


def work(target: int) -> int:
    return 2**256 // (target + 1)


def retarget_bits(prev_bits: int, actual: int, window: int, spacing: int, limit: int) -> int:
    intended = (window - 1) * spacing
    span = min(max(actual, intended // 4), intended * 4)
    prev = bits_to_target(prev_bits)
    assert prev is not None
    new = min(prev * span // intended, limit)
    return target_to_bits(new)


def mine(h: dict[str, Any], target: int) -> int:
    """The smallest nonce whose header hash is <= target."""
    nonce = 0
    while True:
        if int.from_bytes(sha256d(header_bytes({**h, "nonce": nonce})), "big") <= target:
            return nonce
        nonce += 1


# -- networks (docs/consensus.md "Networks" and "Genesis") --------------------------

GENESIS_TIME = 1_767_225_600
NETWORKS = {
    # name: (pow limit as a target, documented genesis nonce, spacing, window)
    "main": (bits_to_target(target_to_bits(2**240 - 1)), 8_661, 60, 720),
    "devnet": (bits_to_target(target_to_bits(2**236 - 1)), 1_587_323, 5, 24),
    "regtest": (bits_to_target(0x207FFFFF), 1, 1, None),
}
DEV_ALLOCATION = 10**12
# docs/consensus.md "Bonds": dev keys are bonded in genesis with the dev
# networks' minimum bond.
DEV_BOND = 1_000_000


def dev_seed(i: int) -> bytes:
    return sha256(b"p2pml dev key " + str(i).encode("ascii"))


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58(data: bytes) -> str:
    n, out = int.from_bytes(data, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def peer_id(public_key: bytes) -> str:
    """docs/protocol.md section 1: identity multihash of the protobuf PublicKey."""
    proto = b"\x08\x01\x12\x20" + public_key  # Type = Ed25519 (1), Data = 32 bytes
    return b58(b"\x00" + bytes([len(proto)]) + proto)


def coinbase(height: int, miner: bytes, amount: int, extra: bytes) -> list[Any]:
    return [0, height, miner, amount, extra]


def allocation(pubkey: bytes, amount: int, bond: int) -> list[Any]:
    return [3, pubkey, amount, bond]


def tx_vector(kind: str, wire: list[Any]) -> dict[str, Any]:
    enc = mp(wire)
    return {"kind": kind, "encoding": enc.hex(), "txid": sha256d(enc).hex()}


def block_vector(header: dict[str, Any], txs: list[list[Any]]) -> dict[str, Any]:
    hb = header_bytes(header)
    return {
        "header": header,
        "header_bytes": hb.hex(),
        "hash": sha256d(hb).hex(),
        "txids": [sha256d(mp(t)).hex() for t in txs],
        "encoding": mp([hb, txs]).hex(),
    }


def genesis_vectors() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (limit, nonce, _spacing, _window) in NETWORKS.items():
        assert limit is not None
        txs = [coinbase(0, bytes(32), 0, b"p2pml genesis")]
        if name != "main":
            txs += [
                allocation(ed25519_public(dev_seed(i)), DEV_ALLOCATION, DEV_BOND) for i in range(8)
            ]
        bits = 0x207FFFFF if name == "regtest" else target_to_bits(limit)
        header = {
            "version": 1,
            "height": 0,
            "prev_hash": bytes(32).hex(),
            "tx_root": merkle_root([sha256d(mp(t)) for t in txs]).hex(),
            "time": GENESIS_TIME,
            "bits": bits,
            "nonce": 0,
        }
        header["nonce"] = mine(header, limit)
        assert header["nonce"] == nonce, (
            f"{name}: docs say nonce {nonce}, PoW finds {header['nonce']}"
        )
        out[name] = {"pow_limit": hex(limit), "pow_limit_bits": bits, **block_vector(header, txs)}
    return out


# -- transactions and signatures ----------------------------------------------------

PUBLISHER_SEED = sha256(b"p2pml vector publisher")
TRAINER_SEED = sha256(b"p2pml vector trainer")
MINER_SEED = sha256(b"p2pml vector miner")
CID_DATA = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
CID_MODEL = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"


def sign_tx(domain: bytes, seed: bytes, unsigned: list[Any], network: bytes) -> tuple[bytes, bytes]:
    """docs/protocol.md "Signatures": the message commits to the network's
    genesis hash, so a transaction signed for one network is void on others."""
    msg = b"p2pml:" + domain + b":" + network + mp(unsigned)
    return msg, ed25519_sign(seed, msg)


def task_specs() -> list[dict[str, Any]]:
    base = {
        "dataset_cid": CID_DATA,
        "format": "csv",
        "v": 1,
    }
    return [
        {
            **base,
            "features": ["a", "b"],
            "holdout_fraction": 0.2,
            "kind": "classification",
            "metric": "accuracy",
            "model": "random_forest_classifier",
            "params": [["max_depth", 3], ["n_estimators", 10]],
            "partition_fraction": 0.5,
            "rounds": 2,
            "target": "label",
        },
        {
            **base,
            "features": [],
            "holdout_fraction": 0.25,
            "kind": "regression",
            "metric": "rmse",
            "model": "ridge",
            "params": [["alpha", 0.5], ["fit_intercept", False], ["solver", "svd"]],
            "partition_fraction": 0.3,
            "rounds": 1,
            "target": "y",
        },
        {
            **base,
            "features": ["x" * 40],
            "holdout_fraction": 0.1,
            "kind": "classification",
            "metric": "log_loss",
            "model": "mlp_classifier",
            "params": [["alpha", 1e-4], ["hidden_layer_sizes", [300, 8]], ["max_iter", 200]],
            "partition_fraction": 0.9,
            "rounds": 64,
            "target": "t",
        },
        {
            # Protocol 6 (docs/federated.md §11.1): a private federated task with
            # a trimmed mean and local DP; its dataset is the validation set.
            "dataset_cid": CID_DATA,
            "federated": {
                "aggregation": "trimmed_mean",
                "classes": [0, 1, 2],
                "clip": 1.5,
                "delta": 1e-05,
                "epsilon": 5.0,
                "local_epochs": 2,
                "noise_multiplier": 4.0,
                "participants": 5,
                "private": "digits",
                "reward": "samples",
                "round_blocks": 6,
                "sampling_rate": 1.0,
                "trim": 1,
                "validation": CID_DATA,
            },
            "features": ["a", "b"],
            "format": "csv",
            "holdout_fraction": 0.2,
            "kind": "classification",
            "metric": "accuracy",
            "model": "sgd_classifier",
            "params": [],
            "partition_fraction": 0.5,
            "rounds": 4,
            "target": "label",
            "v": 1,
        },
        {
            # Protocol 7 (docs/federated.md §11.5): public shards rewarded by
            # each update's gain on a validation set.
            "dataset_cid": CID_DATA,
            "federated": {
                "aggregation": "fedavg",
                "classes": [],
                "clip": 0.0,
                "delta": 0.0,
                "epsilon": 0.0,
                "local_epochs": 1,
                "noise_multiplier": 0.0,
                "participants": 3,
                "private": "",
                "reward": "improvement",
                "round_blocks": 4,
                "sampling_rate": 1.0,
                "trim": 0,
                "validation": CID_DATA,
            },
            "features": ["a", "b"],
            "format": "csv",
            "holdout_fraction": 0.2,
            "kind": "regression",
            "metric": "rmse",
            "model": "sgd_regressor",
            "params": [],
            "partition_fraction": 0.5,
            "rounds": 2,
            "target": "y",
            "v": 1,
        },
    ]


def transaction_vectors(network: bytes, other_network: bytes) -> dict[str, Any]:
    """Signed for ``network`` (regtest); ``cross_network`` holds a task signed
    for ``other_network`` (devnet) that must fail regtest's signature check."""
    keys = [
        {
            "name": n,
            "seed": s.hex(),
            "public_key": ed25519_public(s).hex(),
            "peer_id": peer_id(ed25519_public(s)),
        }
        for n, s in (
            ("publisher", PUBLISHER_SEED),
            ("trainer", TRAINER_SEED),
            ("miner", MINER_SEED),
        )
    ]
    keys += [
        {
            "name": f"dev{i}",
            "seed": dev_seed(i).hex(),
            "public_key": ed25519_public(dev_seed(i)).hex(),
        }
        for i in range(8)
    ]
    pub = ed25519_public(PUBLISHER_SEED)
    trainer = ed25519_public(TRAINER_SEED)
    miner = ed25519_public(MINER_SEED)
    txs: list[dict[str, Any]] = []
    for height, amount, extra in (
        (1, 50_000_000, b""),
        (300, 2**32 + 7, b"\xff" * 64),
        (70_000, 0, b"x"),
    ):
        wire = coinbase(height, miner, amount, extra)
        fields = {"height": height, "miner": miner.hex(), "amount": amount, "extra": extra.hex()}
        txs.append({"fields": fields, **tx_vector("coinbase", wire)})
    wire = allocation(pub, DEV_ALLOCATION, DEV_BOND)
    fields = {"pubkey": pub.hex(), "amount": DEV_ALLOCATION, "bond": DEV_BOND}
    txs.append({"fields": fields, **tx_vector("allocation", wire)})
    tasks: list[bytes] = []
    for i, spec in enumerate(task_specs()):
        fields = {
            "spec": spec,
            "bounty": [1_000_000, 0, 2**40, 40_000, 90_000][i],
            "fee": [1_000, 5_000, 123_456, 1_000, 1_000][i],
            "deadline": [10, 100_000, 1, 28, 10][i],
            "result_reward": [0, 10, 1000, 0, 0][i],
            "max_results": [1, 10_000, 300, 1, 1][i],
            "publisher": pub.hex(),
            "nonce": [0, 42, 2**64 - 1, 6, 7][i],
        }
        unsigned = [
            1,
            spec,
            fields["bounty"],
            fields["fee"],
            fields["deadline"],
            fields["result_reward"],
            fields["max_results"],
            pub,
            fields["nonce"],
        ]
        msg, sig = sign_tx(b"task", PUBLISHER_SEED, unsigned, network)
        vec = tx_vector("task", [*unsigned, sig])
        tasks.append(bytes.fromhex(vec["txid"]))
        txs.append(
            {"fields": {**fields, "signature": sig.hex()}, "signed_message": msg.hex(), **vec}
        )
    seed = sha256(b"p2pml vector including block")
    for i, (rnd, metric, rows, ms, fee) in enumerate(
        (
            (0, 0.8125, 50, 1234, 1_000),
            (0, 1.7976931348623157e308, 2**32 - 1, 0, 2**32),
            (63, -0.0, 2, 7 * 24 * 3600 * 1000, 5_000),
        )
    ):
        fields = {
            "task_id": tasks[i].hex(),
            "seed": seed.hex(),
            "round": rnd,
            "trainer": trainer.hex(),
            "metric": metric,
            "model_cid": CID_MODEL,
            "train_rows": rows,
            "train_ms": ms,
            "fee": fee,
        }
        unsigned = [2, tasks[i], seed, rnd, trainer, metric, CID_MODEL, rows, ms, fee]
        msg, sig = sign_tx(b"result", TRAINER_SEED, unsigned, network)
        txs.append(
            {
                "fields": {**fields, "signature": sig.hex()},
                "signed_message": msg.hex(),
                **tx_vector("result", [*unsigned, sig]),
            }
        )
    dev0, dev1 = ed25519_public(dev_seed(0)), ed25519_public(dev_seed(1))
    for sender_seed, recipient, amount, fee, nonce in (
        (dev_seed(0), dev1, 1, 1_000, 0),
        (dev_seed(1), dev0, 10**12 - 1_000, 2**32, 2**64 - 1),
        (TRAINER_SEED, pub, 123_456_789, 5_000, 7),
    ):
        sender = ed25519_public(sender_seed)
        fields = {
            "sender": sender.hex(),
            "recipient": recipient.hex(),
            "amount": amount,
            "fee": fee,
            "nonce": nonce,
        }
        unsigned = [4, sender, recipient, amount, fee, nonce]
        msg, sig = sign_tx(b"transfer", sender_seed, unsigned, network)
        txs.append(
            {
                "fields": {**fields, "signature": sig.hex()},
                "signed_message": msg.hex(),
                **tx_vector("transfer", [*unsigned, sig]),
            }
        )
    for seed_, amount, fee, nonce in (
        (TRAINER_SEED, 1_000_000, 1_000, 0),
        (dev_seed(2), 2**40, 7_000, 2**64 - 1),
    ):
        trainer_ = ed25519_public(seed_)
        fields = {"trainer": trainer_.hex(), "amount": amount, "fee": fee, "nonce": nonce}
        unsigned = [5, trainer_, amount, fee, nonce]
        msg, sig = sign_tx(b"bond", seed_, unsigned, network)
        txs.append(
            {
                "fields": {**fields, "signature": sig.hex()},
                "signed_message": msg.hex(),
                **tx_vector("bond", [*unsigned, sig]),
            }
        )
    for seed_, fee, nonce in ((TRAINER_SEED, 1_000, 1), (dev_seed(3), 2**32, 2**63)):
        trainer_ = ed25519_public(seed_)
        fields = {"trainer": trainer_.hex(), "fee": fee, "nonce": nonce}
        unsigned = [6, trainer_, fee, nonce]
        msg, sig = sign_tx(b"unbond", seed_, unsigned, network)
        txs.append(
            {
                "fields": {**fields, "signature": sig.hex()},
                "signed_message": msg.hex(),
                **tx_vector("unbond", [*unsigned, sig]),
            }
        )
    for seed_, rid, passed, fee in (
        (dev_seed(4), sha256(b"an audited result"), True, 0),
        (dev_seed(5), sha256(b"another audited result"), False, 300),
    ):
        attester = ed25519_public(seed_)
        fields = {"attester": attester.hex(), "result_id": rid.hex(), "passed": passed, "fee": fee}
        unsigned = [7, attester, rid, passed, fee]
        msg, sig = sign_tx(b"attest", seed_, unsigned, network)
        txs.append(
            {
                "fields": {**fields, "signature": sig.hex()},
                "signed_message": msg.hex(),
                **tx_vector("attest", [*unsigned, sig]),
            }
        )
    # docs/consensus.md "Disputes": a challenge names a result by its id.
    for seed_, rid, fee, nonce in (
        (TRAINER_SEED, sha256(b"disputed result"), 1_000, 0),
        (dev_seed(4), sha256(b"another result"), 2**33, 2**64 - 1),
    ):
        challenger = ed25519_public(seed_)
        fields = {
            "challenger": challenger.hex(),
            "result_id": rid.hex(),
            "fee": fee,
            "nonce": nonce,
        }
        unsigned = [8, challenger, rid, fee, nonce]
        msg, sig = sign_tx(b"challenge", seed_, unsigned, network)
        txs.append(
            {
                "fields": {**fields, "signature": sig.hex()},
                "signed_message": msg.hex(),
                **tx_vector("challenge", [*unsigned, sig]),
            }
        )
    # Federated rounds (protocol 5, docs/federated.md §11): updates (tag 9,
    # signed, domain "fed-update"; protocol 7: committing to ``base``, the hash
    # of the G_r they were trained from) and round closes (tag 10, unsigned).
    for i, (rnd, n, fee) in enumerate(((0, 449, 1_000), (2**32 - 1, 2**53 - 1, 2**64 - 1))):
        base = sha256(b"p2pml vector base model %d" % rnd)
        fields = {
            "task_id": tasks[i].hex(),
            "seed": seed.hex(),
            "round": rnd,
            "base": base.hex(),
            "participant": trainer.hex(),
            "update_cid": CID_MODEL,
            "n_samples": n,
            "fee": fee,
        }
        unsigned = [9, tasks[i], seed, rnd, base, trainer, CID_MODEL, n, fee]
        msg, sig = sign_tx(b"fed-update", TRAINER_SEED, unsigned, network)
        txs.append(
            {
                "fields": {**fields, "signature": sig.hex()},
                "signed_message": msg.hex(),
                **tx_vector("update", [*unsigned, sig]),
            }
        )
    # Protocol 7: a close carries its round's gains ([] unless the task rewards
    # improvement and its validation set parses), uint64 each, at most 2^53 - 1.
    for i, (rnd, gains) in enumerate(((0, []), (63, [0, 1_234_567, 2**53 - 1]))):
        model_hash = sha256(b"p2pml vector global model %d" % rnd)
        fields = {
            "task_id": tasks[i].hex(),
            "round": rnd,
            "model_hash": model_hash.hex(),
            "gains": gains,
        }
        wire = [10, tasks[i], rnd, model_hash, gains]
        txs.append({"fields": fields, **tx_vector("round_close", wire)})
    first_task = next(t for t in txs if t["kind"] == "task")
    unsigned = mp_unsigned_task(first_task["fields"])
    msg, sig = sign_tx(b"task", PUBLISHER_SEED, unsigned, other_network)
    cross = {
        "network": other_network.hex(),
        "fields": {**first_task["fields"], "signature": sig.hex()},
        "signed_message": msg.hex(),
        **tx_vector("task", [*unsigned, sig]),
    }
    return {
        "network": network.hex(),
        "keys": keys,
        "transactions": txs,
        "cross_network": cross,
    }


def mp_unsigned_task(f: dict[str, Any]) -> list[Any]:
    return [
        1,
        f["spec"],
        f["bounty"],
        f["fee"],
        f["deadline"],
        f["result_reward"],
        f["max_results"],
        bytes.fromhex(f["publisher"]),
        f["nonce"],
    ]


# -- blocks and Merkle roots --------------------------------------------------------


def block_vectors(genesis: dict[str, Any], txv: dict[str, Any]) -> dict[str, Any]:
    roots = []
    for n in range(1, 8):
        ids = [sha256(b"leaf %d" % i) for i in range(n)]
        roots.append({"txids": [t.hex() for t in ids], "root": merkle_root(ids).hex()})
    regtest = genesis["regtest"]
    limit = bits_to_target(0x207FFFFF)
    assert limit is not None
    miner = ed25519_public(MINER_SEED)
    by_kind: dict[str, list[bytes]] = {}
    for t in txv["transactions"]:
        by_kind.setdefault(t["kind"], []).append(bytes.fromhex(t["encoding"]))
    blocks = []
    prev, time = regtest["hash"], GENESIS_TIME
    # Height 1: coinbase + a task (fee 1,000); height 2: coinbase + that
    # task's result (fee 1,000).
    bodies: list[list[bytes]] = [by_kind["task"][:1], by_kind["result"][:1]]
    for height, body in enumerate(bodies, start=1):
        fees = 1_000
        cb = mp(coinbase(height, miner, 50_000_000 + fees, b""))
        raw_txs = [cb, *body]
        time += 1
        header = {
            "version": 1,
            "height": height,
            "prev_hash": prev,
            "tx_root": merkle_root([sha256d(t) for t in raw_txs]).hex(),
            "time": time,
            "bits": 0x207FFFFF,
            "nonce": 0,
        }
        header["nonce"] = mine(header, limit)
        hb = header_bytes(header)
        # msgpack of [bin(92), [tx, ...]]: the txs are already canonical bytes.
        enc = (
            b"\x92" + mp(hb) + _head(len(raw_txs), 0x90, 16, (None, 0xDC, 0xDD)) + b"".join(raw_txs)
        )
        blocks.append(
            {
                "header": header,
                "header_bytes": hb.hex(),
                "hash": sha256d(hb).hex(),
                "txids": [sha256d(t).hex() for t in raw_txs],
                "encoding": enc.hex(),
            }
        )
        prev = sha256d(hb).hex()
    return {
        "merkle": roots,
        "regtest_chain": blocks,
        "median_time_past": mtp_vectors(),
        "timewarp": timewarp_vectors(),
    }


# docs/consensus.md "Timewarp": ten target spacings per network.
TIMEWARP_SECONDS = {"main": 600, "devnet": 50, "regtest": 10}


def timewarp_vectors() -> list[dict[str, Any]]:
    """The first block of a retarget window (height % window == 0) may not be
    older than its parent minus the bound; other heights, and regtest (no
    retargeting), are not bound by it."""
    out = []
    parent_time = GENESIS_TIME + 10**6
    for name, (_limit, _nonce, _spacing, window) in NETWORKS.items():
        bound = TIMEWARP_SECONDS[name]
        for height in [window, 2 * window, window + 1] if window else [144]:
            for back in (bound, bound + 1):
                first = window is not None and height % window == 0
                out.append(
                    {
                        "network": name,
                        "height": height,
                        "parent_time": parent_time,
                        "time": parent_time - back,
                        "valid": not (first and back > bound),
                    }
                )
    return out


def mtp_vectors() -> list[dict[str, Any]]:
    """Median time past: times of the parent and up to 10 ancestors, newest first."""
    out = []
    for times in (
        [GENESIS_TIME],
        [GENESIS_TIME + 5, GENESIS_TIME],
        [100, 300, 200, 400],
        [7, 3, 9, 1, 5, 11, 2, 8, 6, 4, 10],
        [50, 50, 50, 10, 90, 50, 20, 80, 30, 70, 60],
    ):
        mtp = sorted(times)[len(times) // 2]
        out.append({"times": times, "median": mtp, "min_valid_time": mtp + 1})
    return out


# -- proof of work -------------------------------------------------------------------


def pow_vectors() -> dict[str, Any]:
    decode = []
    for bits in (
        0x1F00FFFF,
        0x1E0FFFFF,
        0x207FFFFF,
        0x1D00FFFF,
        0x1B0404CB,
        0x03123456,
        0x02123456,
        0x01123456,
        0x01003456,
        0x00123456,
        0x04123456,
        0x05009234,
        0x2100FFFF,
        0x22000001,
        0x23000001,
        0x04923456,
        0x00800000,
        0x01000000,
        0x20000000,
        0xFF7FFFFF,
    ):
        t = bits_to_target(bits)
        decode.append({"bits": bits, "target": None if t is None else hex(t)})
    encode = []
    for t in (
        1,
        0x7F,
        0x80,
        0xFF,
        0x1234,
        0x800000,
        0x123456,
        0x12345678,
        2**240 - 1,
        2**236 - 1,
        2**255,
        2**256 - 1,
        0xFFFF * 2**208,
    ):
        encode.append({"target": hex(t), "bits": target_to_bits(t)})
    works = [
        {"target": hex(t), "work": hex(work(t))} for t in (1, 2**255, 2**256 - 1, 0xFFFF * 2**224)
    ]
    steps = []
    for name in ("main", "devnet"):
        limit, _nonce, spacing, window = NETWORKS[name]
        assert limit is not None and window is not None
        intended = (window - 1) * spacing
        limit_bits = target_to_bits(limit)
        half = target_to_bits(limit // 2)
        for prev_bits in (limit_bits, half, 0x1B0404CB):
            for actual in (
                0,
                1,
                intended // 4 - 1,
                intended // 4,
                intended // 2,
                intended - 1,
                intended,
                intended + 1,
                3 * intended,
                4 * intended,
                4 * intended + 1,
                10**9,
                -5,
            ):
                steps.append(
                    {
                        "network": name,
                        "prev_bits": prev_bits,
                        "actual_timespan": actual,
                        "new_bits": retarget_bits(prev_bits, actual, window, spacing, limit),
                    }
                )
    return {"decode": decode, "encode": encode, "work": works, "retarget": steps}


# -- partitions, holdout, random_state (docs/tasks.md section 5) -----------------------


def row_keys(msg: bytes, n: int) -> list[int]:
    s = hashlib.shake_256(msg).digest(8 * n)
    return [int.from_bytes(s[8 * i : 8 * i + 8], "big") for i in range(n)]


def select(cands: list[int], keys: list[int], k: int) -> list[int]:
    return sorted(sorted(cands, key=lambda i: (keys[i], i))[:k])


def partition_vectors() -> dict[str, Any]:
    seed = sha256(b"p2pml vector seed")
    task = sha256(b"p2pml vector task")
    trainers = [ed25519_public(TRAINER_SEED), ed25519_public(PUBLISHER_SEED)]
    cases = []
    for n, h, p in (
        (10, 0.1, 0.5),
        (10, 0.3, 0.7),
        (20, 0.2, 0.25),
        (100, 0.29, 0.57),
        (137, 0.2, 0.8),
        (1000, 0.25, 0.3),
        (49, 0.5, 0.5),
        (9, 0.2, 0.5),
        (10, 0.05, 0.5),
        (10, 0.2, 0.15),
        (33, 0.5, 0.51),
    ):
        hs, ps = math.floor(n * h), math.floor(n * p)
        case: dict[str, Any] = {
            "seed": seed.hex(),
            "task_id": task.hex(),
            "n_rows": n,
            "holdout_fraction": h,
            "partition_fraction": p,
            "holdout_size": hs,
            "partition_size": ps,
        }
        if n < 10 or hs < 1 or ps < 2 or hs + ps > n:
            cases.append({**case, "error": "too-few-rows"})
            continue
        hold = select(list(range(n)), row_keys(b"p2pml/holdout/v1" + seed + task, n), hs)
        rest = [i for i in range(n) if i not in set(hold)]
        parts = []
        for pk in trainers:
            for rnd in (0, 1, 2**32 - 1):
                msg = b"p2pml/partition/v1" + seed + task + pk + struct.pack(">I", rnd)
                parts.append(
                    {"pubkey": pk.hex(), "round": rnd, "rows": select(rest, row_keys(msg, n), ps)}
                )
        cases.append({**case, "holdout": hold, "partitions": parts})
    states = []
    for pk in trainers:
        for rnd in (0, 1, 7, 2**32 - 1):
            d = sha256(b"p2pml/random_state/v1" + seed + task + pk + struct.pack(">I", rnd))
            states.append(
                {
                    "seed": seed.hex(),
                    "task_id": task.hex(),
                    "pubkey": pk.hex(),
                    "round": rnd,
                    "random_state": int.from_bytes(d[:4], "big") & 0x7FFFFFFF,
                }
            )
    message = b"p2pml/holdout/v1" + seed + task
    keys = {"message": message.hex(), "n_rows": 5, "keys": [hex(k) for k in row_keys(message, 5)]}
    return {"row_keys": keys, "cases": cases, "random_state": states}


def audit_vectors() -> dict[str, Any]:
    """Beacon audit selection and committee order (docs/consensus.md "Audit
    committees"): draw = first 8 bytes, big-endian, of
    SHA-256("p2pml-audit" || beacon || result id)."""
    fraction = 0.1  # main
    threshold = math.floor(fraction * 2**64)  # binary64 product, then floor
    draws = []
    for i in range(4000):
        beacon, rid = sha256(b"block %d" % i), sha256(b"result %d" % i)
        d = hashlib.sha256(b"p2pml-audit" + beacon + rid).digest()
        draws.append((int.from_bytes(d[:8], "big"), beacon, rid))
    # The first few, and the ones closest to the threshold on either side:
    # they tell a wrong threshold (say 0.1 * 2^63) from the right one.
    below = sorted((d for d in draws if d[0] < threshold), key=lambda d: -d[0])[:4]
    above = sorted((d for d in draws if d[0] >= threshold), key=lambda d: d[0])[:4]
    chosen = draws[:8] + below + above
    cases = [
        {"beacon": b.hex(), "result_id": r.hex(), "draw": d, "selected": d < threshold}
        for d, b, r in chosen
    ]
    # Committees (protocol 6): a Fisher-Yates shuffle of the sorted bonded
    # keys, step j swapping j with j + d mod (n - j), d = first 8 bytes, big
    # endian, of SHA-256("p2pml-committee" || beacon || result id || u32 BE j);
    # the first `size` eligible keys (not the trainer) in shuffled order.
    committees = []
    for i in range(4):
        beacon, rid = sha256(b"beacon %d" % i), sha256(b"rid %d" % i)
        bonded = sorted(sha256(b"key %d %d" % (i, j)) for j in range(8 + 3 * i))
        ineligible = bonded[1::3]  # immature, unbonding or under min_bond
        trainer = bonded[2]
        size = 3 if i < 3 else len(bonded)  # the last: fewer eligible than seats
        order = list(bonded)
        for j in range(len(order)):
            d = hashlib.sha256(b"p2pml-committee" + beacon + rid + j.to_bytes(4, "big")).digest()
            r = j + int.from_bytes(d[:8], "big") % (len(order) - j)
            order[j], order[r] = order[r], order[j]
        committee = [k for k in order if k != trainer and k not in ineligible][:size]
        committees.append(
            {
                "beacon": beacon.hex(),
                "result_id": rid.hex(),
                "bonded": [k.hex() for k in bonded],
                "ineligible": [k.hex() for k in ineligible],
                "trainer": trainer.hex(),
                "committee_size": size,
                "shuffled": [k.hex() for k in order],
                "committee": [k.hex() for k in committee],
            }
        )
    return {
        "network": "main",
        "audit_fraction": fraction,
        "threshold": threshold,
        "cases": cases,
        "committees": committees,
    }


# -- sync messages (docs/protocol.md section 4) -------------------------------------


def sync_vectors(genesis: dict[str, Any]) -> dict[str, Any]:
    g = bytes.fromhex(genesis["regtest"]["hash"])
    tip = sha256(b"tip")
    hashes = [sha256(b"h%d" % i) for i in range(3)]
    reqs = [
        {"kind": "status", "encoding": mp([0]).hex()},
        {
            "kind": "headers",
            "locator": [h.hex() for h in hashes],
            "stop": "",
            "encoding": mp([1, hashes, b""]).hex(),
        },
        {
            "kind": "headers",
            "locator": [g.hex()],
            "stop": tip.hex(),
            "encoding": mp([1, [g], tip]).hex(),
        },
        {"kind": "blocks", "hashes": [h.hex() for h in hashes], "encoding": mp([2, hashes]).hex()},
    ]
    statuses = []
    for height, cw in ((0, 1), (1, 0), (300, 2**16), (2**32 - 1, 2**256 - 1)):
        wb = cw.to_bytes(max(1, (cw.bit_length() + 7) // 8), "big")
        statuses.append(
            {
                "genesis_hash": g.hex(),
                "tip_hash": tip.hex(),
                "height": height,
                "chain_work": hex(cw),
                "encoding": mp([0, g, tip, height, wb]).hex(),
            }
        )
    headers = [bytes.fromhex(b["header_bytes"]) for b in [genesis["regtest"]]]
    return {
        "requests": reqs,
        "status": statuses,
        "headers": {"headers": [h.hex() for h in headers], "encoding": mp([1, headers]).hex()},
    }


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    _rfc8032_self_check()
    genesis = genesis_vectors()
    txv = transaction_vectors(
        bytes.fromhex(genesis["regtest"]["hash"]), bytes.fromhex(genesis["devnet"]["hash"])
    )
    files = {
        "genesis.json": genesis,
        "transactions.json": txv,
        "blocks.json": block_vectors(genesis, txv),
        "pow.json": pow_vectors(),
        "partition.json": partition_vectors(),
        "sync.json": sync_vectors(genesis),
        "audit.json": audit_vectors(),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        (out / name).write_text(text)


if __name__ == "__main__":
    main()
