"""The implementation against the consensus vectors in tests/vectors/.

The vectors are built from the documents by tests/vectors/make_vectors.py
(standard library only, never importing p2pml); every vector is checked in
both directions where the API allows (build -> bytes, bytes -> object), and a
last test re-runs the generator and demands the committed files.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p2pml.chain.audits import audit_draw, committee_positions, draw_committee, is_selected
from p2pml.chain.encoding import decode_block, decode_tx, encode_block, encode_tx, packb, tx_id
from p2pml.chain.hashing import merkle_root
from p2pml.chain.params import MAIN, NETWORKS, REGTEST, dev_identity
from p2pml.chain.pow import bits_to_target, block_work, retarget, target_to_bits
from p2pml.chain.rules import (
    check_block_body,
    check_header,
    check_header_context,
    check_timewarp,
    check_tx_root,
    median_time,
)
from p2pml.chain.tasks import DOMAIN_RESULT, DOMAIN_TASK, ResultTx, TaskTx
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import (
    DOMAIN_ATTEST,
    DOMAIN_BOND,
    DOMAIN_CHALLENGE,
    DOMAIN_TRANSFER,
    DOMAIN_UNBOND,
    DOMAIN_UPDATE,
    Allocation,
    AttestTx,
    Block,
    BlockHeader,
    BondTx,
    ChallengeTx,
    Coinbase,
    RoundCloseTx,
    Transaction,
    TransferTx,
    UnbondTx,
    UpdateTx,
    signed_payload,
)
from p2pml.cidv0 import is_cidv0
from p2pml.crypto import Identity, signing_message, verify
from p2pml.errors import ValidationError
from p2pml.ml.partition import (
    check_sizes,
    derive_random_state,
    holdout_indices,
    holdout_size,
    partition_indices,
    partition_size,
    row_keys,
)
from p2pml.net import protocol as P
from tests.unit.chain.test_chain_audits import FakeBonds

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


GENESIS = _load("genesis.json")
TXS = _load("transactions.json")
BLOCKS = _load("blocks.json")
POW = _load("pow.json")
PARTITION = _load("partition.json")
AUDIT = _load("audit.json")
SYNC = _load("sync.json")

h = bytes.fromhex


def _header(d: dict[str, Any]) -> BlockHeader:
    return BlockHeader(
        d["version"],
        d["height"],
        h(d["prev_hash"]),
        h(d["tx_root"]),
        d["time"],
        d["bits"],
        d["nonce"],
    )


def _check_block_vector(v: dict[str, Any]) -> Block:
    header = _header(v["header"])
    assert header.serialize().hex() == v["header_bytes"]
    assert header.hash.hex() == v["hash"]
    block = decode_block(h(v["encoding"]))
    assert block.header == header
    assert [tx_id(t).hex() for t in block.txs] == v["txids"]
    assert merkle_root([tx_id(t) for t in block.txs]).hex() == v["header"]["tx_root"]
    # Re-encoded from its parts (no cached bytes): the encoding is canonical.
    assert encode_block(Block(block.header, block.txs)).hex() == v["encoding"]
    return block


# -- genesis --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GENESIS))
def test_genesis(name: str) -> None:
    v = GENESIS[name]
    params = NETWORKS[name]
    assert params.pow_limit_bits == v["pow_limit_bits"]
    assert hex(params.pow_limit) == v["pow_limit"]
    assert params.genesis_hash.hex() == v["hash"]
    assert encode_block(params.genesis).hex() == v["encoding"]
    block = _check_block_vector(v)
    assert block == params.genesis
    check_header(block.header, params)


# -- keys, transactions, signatures ---------------------------------------------------


@pytest.mark.parametrize("key", TXS["keys"], ids=lambda k: k["name"])
def test_public_keys(key: dict[str, Any]) -> None:
    assert Identity.from_seed(h(key["seed"])).public_key.hex() == key["public_key"]
    if "peer_id" in key:
        from p2pml.net.host import peer_id_of

        assert peer_id_of(h(key["seed"])) == key["peer_id"]
    if key["name"].startswith("dev"):
        assert dev_identity(int(key["name"][3:])).seed.hex() == key["seed"]


def _spec(d: dict[str, Any]) -> TaskSpec:
    return TaskSpec.from_wire(d)


def _build(v: dict[str, Any]) -> Transaction:
    f = v["fields"]
    if v["kind"] == "coinbase":
        return Coinbase(f["height"], h(f["miner"]), f["amount"], h(f["extra"]))
    if v["kind"] == "allocation":
        return Allocation(h(f["pubkey"]), f["amount"], f["bond"])
    if v["kind"] == "task":
        return TaskTx(
            spec=_spec(f["spec"]),
            bounty=f["bounty"],
            fee=f["fee"],
            deadline=f["deadline"],
            result_reward=f["result_reward"],
            max_results=f["max_results"],
            publisher=h(f["publisher"]),
            nonce=f["nonce"],
            signature=h(f["signature"]),
        )
    if v["kind"] == "transfer":
        return TransferTx(
            sender=h(f["sender"]),
            recipient=h(f["recipient"]),
            amount=f["amount"],
            fee=f["fee"],
            nonce=f["nonce"],
            signature=h(f["signature"]),
        )
    if v["kind"] == "bond":
        return BondTx(h(f["trainer"]), f["amount"], f["fee"], f["nonce"], h(f["signature"]))
    if v["kind"] == "unbond":
        return UnbondTx(h(f["trainer"]), f["fee"], f["nonce"], h(f["signature"]))
    if v["kind"] == "attest":
        return AttestTx(
            h(f["attester"]), h(f["result_id"]), f["passed"], f["fee"], h(f["signature"])
        )
    if v["kind"] == "challenge":
        return ChallengeTx(
            h(f["challenger"]), h(f["result_id"]), f["fee"], f["nonce"], h(f["signature"])
        )
    if v["kind"] == "update":
        return UpdateTx(
            task_id=h(f["task_id"]),
            seed=h(f["seed"]),
            round=f["round"],
            base=h(f["base"]),
            participant=h(f["participant"]),
            update_cid=f["update_cid"],
            n_samples=f["n_samples"],
            fee=f["fee"],
            signature=h(f["signature"]),
        )
    if v["kind"] == "round_close":
        return RoundCloseTx(h(f["task_id"]), f["round"], h(f["model_hash"]), tuple(f["gains"]))
    return ResultTx(
        task_id=h(f["task_id"]),
        seed=h(f["seed"]),
        round=f["round"],
        trainer=h(f["trainer"]),
        metric=f["metric"],
        model_cid=f["model_cid"],
        train_rows=f["train_rows"],
        train_ms=f["train_ms"],
        fee=f["fee"],
        signature=h(f["signature"]),
    )


SIGNED = ("task", "result", "transfer", "bond", "unbond", "attest", "challenge", "update")


def _tx_ids(v: dict[str, Any]) -> str:
    return f"{v['kind']}-{v['txid'][:8]}"


@pytest.mark.parametrize("v", TXS["transactions"], ids=_tx_ids)
def test_transaction(v: dict[str, Any]) -> None:
    tx = _build(v)
    assert encode_tx(tx).hex() == v["encoding"]
    assert tx_id(tx).hex() == v["txid"]
    assert decode_tx(h(v["encoding"])) == tx
    # Every vector is a transaction that passes its stateless rules.
    handler_for(tx).check(tx, NETWORKS["regtest"])


@pytest.mark.parametrize(
    "v",
    [t for t in TXS["transactions"] if t["kind"] in SIGNED],
    ids=_tx_ids,
)
def test_signature(v: dict[str, Any]) -> None:
    tx = _build(v)
    assert isinstance(
        tx, TaskTx | ResultTx | TransferTx | BondTx | UnbondTx | AttestTx | ChallengeTx | UpdateTx
    )
    network = h(TXS["network"])
    assert network == NETWORKS["regtest"].genesis_hash
    if isinstance(tx, TaskTx):
        domain, signer = DOMAIN_TASK, tx.publisher
    elif isinstance(tx, ResultTx):
        domain, signer = DOMAIN_RESULT, tx.trainer
    elif isinstance(tx, TransferTx):
        domain, signer = DOMAIN_TRANSFER, tx.sender
    elif isinstance(tx, BondTx):
        domain, signer = DOMAIN_BOND, tx.trainer
    elif isinstance(tx, ChallengeTx):
        domain, signer = DOMAIN_CHALLENGE, tx.challenger
    elif isinstance(tx, AttestTx):
        domain, signer = DOMAIN_ATTEST, tx.attester
    elif isinstance(tx, UpdateTx):
        domain, signer = DOMAIN_UPDATE, tx.participant
    else:
        domain, signer = DOMAIN_UNBOND, tx.trainer
    payload = signed_payload(network, tx.unsigned_wire())
    assert payload == network + packb(tx.unsigned_wire())
    assert signing_message(domain, payload).hex() == v["signed_message"]
    seed = next(k["seed"] for k in TXS["keys"] if k["public_key"] == signer.hex())
    signed = tx.signed_by(Identity.from_seed(h(seed)), network)
    assert signed.signature.hex() == v["fields"]["signature"]
    assert verify(signer, domain, payload, tx.signature)
    if isinstance(tx, ResultTx):
        assert is_cidv0(tx.model_cid)


def test_a_task_signed_for_devnet_is_void_on_regtest() -> None:
    v = {**TXS["cross_network"], "kind": "task"}
    tx = _build(v)
    assert encode_tx(tx).hex() == v["encoding"]
    assert h(v["network"]) == NETWORKS["devnet"].genesis_hash
    devnet = NETWORKS["devnet"]
    handler_for(tx).check(tx, devnet)
    with pytest.raises(ValidationError) as err:
        handler_for(tx).check(tx, NETWORKS["regtest"])
    assert err.value.reason == "bad-task-sig"


@pytest.mark.parametrize(
    "v", BLOCKS["timewarp"], ids=lambda v: f"{v['network']}-{v['height']}-{v['valid']}"
)
def test_timewarp(v: dict[str, Any]) -> None:
    p = NETWORKS[v["network"]]
    header = _at(v["time"], v["height"])
    if v["valid"]:
        check_timewarp(header, v["parent_time"], p)
    else:
        with pytest.raises(ValidationError) as err:
            check_timewarp(header, v["parent_time"], p)
        assert err.value.reason == "time-timewarp-attack"


# -- blocks -------------------------------------------------------------------------


@pytest.mark.parametrize("v", BLOCKS["merkle"], ids=lambda v: f"{len(v['txids'])}-leaves")
def test_merkle_root(v: dict[str, Any]) -> None:
    assert merkle_root([h(t) for t in v["txids"]]).hex() == v["root"]


@pytest.mark.parametrize(
    "v", BLOCKS["regtest_chain"], ids=lambda v: f"height-{v['header']['height']}"
)
def test_regtest_block(v: dict[str, Any]) -> None:
    block = _check_block_vector(v)
    params = NETWORKS["regtest"]
    check_header(block.header, params)
    check_block_body(block, check_tx_root(block), params)


def test_regtest_chain_links_to_genesis() -> None:
    prev = GENESIS["regtest"]["hash"]
    for v in BLOCKS["regtest_chain"]:
        assert v["header"]["prev_hash"] == prev
        prev = v["hash"]


@pytest.mark.parametrize("v", BLOCKS["median_time_past"], ids=lambda v: f"{len(v['times'])}-times")
def test_median_time_past(v: dict[str, Any]) -> None:
    assert median_time(v["times"]) == v["median"]
    p = NETWORKS["regtest"]
    parent = len(v["times"]) - 1
    bits = p.pow_limit_bits
    with pytest.raises(ValidationError) as err:
        check_header_context(
            _at(v["min_valid_time"] - 1, parent + 1), parent, bits, v["median"], 2**40, p
        )
    assert err.value.reason == "time-too-old"
    check_header_context(_at(v["min_valid_time"], parent + 1), parent, bits, v["median"], 2**40, p)


def _at(time: int, height: int) -> BlockHeader:
    g = NETWORKS["regtest"].genesis.header
    return BlockHeader(1, height, g.prev_hash, g.tx_root, time, g.bits, 0)


# -- proof of work ----------------------------------------------------------------------


@pytest.mark.parametrize("v", POW["decode"], ids=lambda v: f"{v['bits']:#010x}")
def test_bits_to_target(v: dict[str, Any]) -> None:
    if v["target"] is None:
        with pytest.raises(ValidationError) as err:
            bits_to_target(v["bits"])
        assert err.value.reason == "bad-bits"
    else:
        assert hex(bits_to_target(v["bits"])) == v["target"]


@pytest.mark.parametrize("v", POW["encode"], ids=lambda v: v["target"][:12])
def test_target_to_bits(v: dict[str, Any]) -> None:
    assert target_to_bits(int(v["target"], 16)) == v["bits"]


@pytest.mark.parametrize("v", POW["work"], ids=lambda v: v["target"][:12])
def test_block_work(v: dict[str, Any]) -> None:
    assert hex(block_work(int(v["target"], 16))) == v["work"]


def test_retarget_steps() -> None:
    assert POW["retarget"]
    for v in POW["retarget"]:
        p = NETWORKS[v["network"]]
        new = retarget(
            bits_to_target(v["prev_bits"]), v["actual_timespan"], p.intended_timespan, p.pow_limit
        )
        assert target_to_bits(new) == v["new_bits"], v


# -- holdout, partitions, random_state, audit -------------------------------------------------


def test_row_keys() -> None:
    v = PARTITION["row_keys"]
    assert [hex(int(k)) for k in row_keys(h(v["message"]), v["n_rows"])] == v["keys"]


@pytest.mark.parametrize(
    "v",
    PARTITION["cases"],
    ids=lambda v: f"{v['n_rows']}-{v['holdout_fraction']}-{v['partition_fraction']}",
)
def test_partition(v: dict[str, Any]) -> None:
    n, hf, pf = v["n_rows"], v["holdout_fraction"], v["partition_fraction"]
    seed, task = h(v["seed"]), h(v["task_id"])
    assert holdout_size(n, hf) == v["holdout_size"]
    assert partition_size(n, pf) == v["partition_size"]
    if "error" in v:
        with pytest.raises(ValidationError) as err:
            check_sizes(n, hf, pf)
        assert err.value.reason == v["error"]
        return
    assert holdout_indices(seed, task, n, hf).tolist() == v["holdout"]
    for part in v["partitions"]:
        rows = partition_indices(seed, task, h(part["pubkey"]), part["round"], n, hf, pf)
        assert rows.tolist() == part["rows"]


@pytest.mark.parametrize(
    "v", PARTITION["random_state"], ids=lambda v: f"{v['pubkey'][:6]}-{v['round']}"
)
def test_random_state(v: dict[str, Any]) -> None:
    got = derive_random_state(h(v["seed"]), h(v["task_id"]), h(v["pubkey"]), v["round"])
    assert got == v["random_state"]


def test_audit_selection() -> None:
    assert AUDIT["audit_fraction"] == MAIN.audit_fraction
    cases = AUDIT["cases"]
    # Both outcomes occur, so the vector distinguishes a wrong threshold.
    assert {c["selected"] for c in cases} == {True, False}
    for c in cases:
        beacon, rid = h(c["beacon"]), h(c["result_id"])
        assert audit_draw(beacon, rid) == c["draw"], c
        assert is_selected(MAIN, beacon, rid, winner=False) == c["selected"], c
        assert is_selected(MAIN, beacon, rid, winner=True)  # winners always are


def test_committee_order() -> None:
    assert AUDIT["committees"]
    for c in AUDIT["committees"]:
        beacon, rid = h(c["beacon"]), h(c["result_id"])
        bonded = [h(k) for k in c["bonded"]]
        walk = [bonded[p].hex() for p in committee_positions(beacon, rid, len(bonded))]
        assert walk == c["shuffled"]
        ineligible = {h(k) for k in c["ineligible"]}
        params = dataclasses.replace(REGTEST, committee_size=c["committee_size"])
        view = FakeBonds(bonded, lambda k, ineligible=ineligible: k not in ineligible)
        got = draw_committee(view, params, beacon, 10**6, rid, h(c["trainer"]))  # type: ignore[arg-type]
        assert [k.hex() for k in got] == c["committee"]


# -- sync messages ---------------------------------------------------------------------


@pytest.mark.parametrize("v", SYNC["requests"], ids=lambda v: v["kind"])
def test_sync_request(v: dict[str, Any]) -> None:
    req: P.Request
    if v["kind"] == "status":
        req = None
    elif v["kind"] == "headers":
        req = P.HeadersReq(tuple(h(x) for x in v["locator"]), h(v["stop"]) or None)
    else:
        req = P.BlocksReq(tuple(h(x) for x in v["hashes"]))
    assert P.encode_request(req).hex() == v["encoding"]
    assert P.decode_request(h(v["encoding"])) == req


@pytest.mark.parametrize("v", SYNC["status"], ids=lambda v: str(v["height"]))
def test_sync_status(v: dict[str, Any]) -> None:
    msg = P.StatusMsg(h(v["genesis_hash"]), h(v["tip_hash"]), v["height"], int(v["chain_work"], 16))
    assert P.encode_status(msg).hex() == v["encoding"]
    assert P.decode_status(h(v["encoding"])) == msg


def test_sync_headers() -> None:
    v = SYNC["headers"]
    headers = [h(x) for x in v["headers"]]
    assert P.encode_headers(headers).hex() == v["encoding"]
    assert P.decode_headers(h(v["encoding"])) == headers


# -- the generator ----------------------------------------------------------------------


def test_make_vectors_reproduces_the_committed_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-I", str(VECTORS / "make_vectors.py"), str(tmp_path)],
        check=True,
        timeout=120,
    )
    committed = sorted(p.name for p in VECTORS.glob("*.json"))
    assert sorted(p.name for p in tmp_path.glob("*.json")) == committed
    for name in committed:
        assert (tmp_path / name).read_text() == (VECTORS / name).read_text(), name


def test_make_vectors_uses_only_the_standard_library() -> None:
    import ast

    tree = ast.parse((VECTORS / "make_vectors.py").read_text())
    modules = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    modules |= {
        n.module.split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0
    }
    assert modules and modules <= sys.stdlib_module_names | {"__future__"}, modules
