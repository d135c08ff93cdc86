"""The consensus rules of trainer bonds.

* ``BondTx`` (tag 5): ``trainer`` locks ``amount`` (at least the network's
  ``min_bond``) of its balance and pays ``fee`` to the miner. One bond per
  key: a second is refused (``bond-exists``) until the first is released.
* ``UnbondTx`` (tag 6): asks the release of the key's bond. Refused while
  any of the key's results or federated updates (protocol 7) can still be
  paid or disputed (``bond-locked``: a task holding one is open or inside
  its payout window). The bond is
  credited back ``unbond_delay`` blocks after the block including the
  unbond; meanwhile it counts for nothing (``bond-unbonding``).
* A result counts only from a key whose bond was registered at least
  ``bond_maturity`` blocks before the task's seed block, so no key can be
  chosen once the seed (the task's block hash) is known.
* Disputes (:mod:`p2pml.chain.disputes`) may slash a bond: a voided
  result's trainer loses all of it, a wrong challenger ``challenge_stake``.
  An open challenge locks its challenger's bond like an unpaid result.
* Replay: every bond and unbond id the chain connects is recorded
  (``bondtx:<id>``) and refused again (``duplicate-bond``): a replayed bond
  would lock a key's coins against its will, a replayed unbond release them.

State (all undo-logged through ``StateView``): ``bond:<pubkey>`` ->
``{"amount", "height", "unbond_at"}`` (plus ``"challenges"``, the open
challenges of the key, while there are any); ``bondlock:<pubkey>`` -> task
ids holding an unpaid result or update of the key, and result ids it disputes;
``unb:<height u64>`` -> keys whose bond is released at that height;
``bonded`` -> every key holding a bond (sorted), so audit committees can be
drawn without scanning the state.
"""

from __future__ import annotations

from typing import Any

from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.params import NetworkParams
from p2pml.chain.types import DOMAIN_BOND, DOMAIN_UNBOND, BondTx, UnbondTx, signed_payload
from p2pml.crypto import verify
from p2pml.errors import ValidationError


def bond_key(pubkey: bytes) -> bytes:
    return b"bond:" + pubkey


def bond_tx_key(tx_id: bytes) -> bytes:
    return b"bondtx:" + tx_id


def lock_key(pubkey: bytes) -> bytes:
    return b"bondlock:" + pubkey


def release_key(height: int) -> bytes:
    return b"unb:" + height.to_bytes(8, "big")


BONDED_KEY = b"bonded"


def bonded_keys(view: StateView) -> list[bytes]:
    """Every key holding a bond (unbonding ones included), sorted."""
    return list(view.get(BONDED_KEY, []))


def register_bond(view: StateView, pubkey: bytes, amount: int, height: int) -> None:
    view.put(bond_key(pubkey), {"amount": amount, "height": height, "unbond_at": None})
    view.put(BONDED_KEY, sorted({*bonded_keys(view), pubkey}))


def drop_bond(view: StateView, pubkey: bytes) -> None:
    """The key holds no bond any more (released; slashing uses it too)."""
    view.delete(bond_key(pubkey))
    view.put(BONDED_KEY, [k for k in bonded_keys(view) if k != pubkey] or None)


class BondHandler:
    def check(self, tx: BondTx, params: NetworkParams) -> None:
        payload = signed_payload(params.genesis_hash, tx.unsigned_wire())
        if not verify(tx.trainer, DOMAIN_BOND, payload, tx.signature):
            raise ValidationError("bad-bond-sig", "signature does not match the trainer")
        if tx.amount < params.min_bond:
            raise ValidationError("bad-bond-amount", f"bond {tx.amount} < {params.min_bond}")
        if tx.fee < params.min_bond_fee:
            raise ValidationError("bad-bond-fee", f"fee {tx.fee} < {params.min_bond_fee}")

    def apply(self, tx: BondTx, view: StateView, ctx: BlockContext) -> None:
        if view.get(bond_tx_key(tx.id)) is not None:
            raise ValidationError("duplicate-bond", "bond already in the chain")
        if view.get(bond_key(tx.trainer)) is not None:
            raise ValidationError("bond-exists", "this key holds a bond already")
        view.debit(tx.trainer, tx.amount + tx.fee)  # insufficient-funds
        ctx.fees += tx.fee
        register_bond(view, tx.trainer, tx.amount, ctx.height)
        view.put(bond_tx_key(tx.id), ctx.height)


class UnbondHandler:
    def check(self, tx: UnbondTx, params: NetworkParams) -> None:
        payload = signed_payload(params.genesis_hash, tx.unsigned_wire())
        if not verify(tx.trainer, DOMAIN_UNBOND, payload, tx.signature):
            raise ValidationError("bad-unbond-sig", "signature does not match the trainer")
        if tx.fee < params.min_bond_fee:
            raise ValidationError("bad-bond-fee", f"fee {tx.fee} < {params.min_bond_fee}")

    def apply(self, tx: UnbondTx, view: StateView, ctx: BlockContext) -> None:
        if view.get(bond_tx_key(tx.id)) is not None:
            raise ValidationError("duplicate-bond", "unbond already in the chain")
        bond = view.get(bond_key(tx.trainer))
        if bond is None:
            raise ValidationError("no-bond", "this key holds no bond")
        if bond["unbond_at"] is not None:
            raise ValidationError("bond-unbonding", "the bond is being released already")
        if view.get(lock_key(tx.trainer)):
            raise ValidationError(
                "bond-locked", "a task holding a result of this key is open or not paid yet"
            )
        view.debit(tx.trainer, tx.fee)  # insufficient-funds
        ctx.fees += tx.fee
        release_at = ctx.height + ctx.params.unbond_delay
        view.put(bond_key(tx.trainer), {**bond, "unbond_at": release_at})
        view.put(release_key(release_at), [*view.get(release_key(release_at), []), tx.trainer])
        view.put(bond_tx_key(tx.id), ctx.height)


def release_due_bonds(view: StateView, ctx: BlockContext) -> None:
    """Block hook: bonds whose unbond delay ends at this height go back."""
    keys = view.get(release_key(ctx.height))
    if keys is None:
        return
    for pubkey in keys:
        bond = view.get(bond_key(pubkey))
        if bond is None:  # slashed meanwhile (a dispute): nothing to release
            continue
        view.credit(pubkey, bond["amount"])
        drop_bond(view, pubkey)
    view.delete(release_key(ctx.height))


# -- what results need ------------------------------------------------------------


def require_bond(view: StateView, params: NetworkParams, trainer: bytes, seed_height: int) -> None:
    """Raise unless ``trainer`` may report on a task seeded at ``seed_height``."""
    bond: dict[str, Any] | None = view.get(bond_key(trainer))
    if bond is None or bond["amount"] < params.min_bond:
        raise ValidationError("no-bond", "the trainer holds no bond")
    if bond["unbond_at"] is not None:
        raise ValidationError("bond-unbonding", "the trainer's bond is being released")
    if bond["height"] + params.bond_maturity > seed_height:
        raise ValidationError(
            "bond-too-young",
            f"bond at height {bond['height']}, task seeded at {seed_height}: "
            f"needs {params.bond_maturity} blocks between",
        )


def lock_bond(view: StateView, trainer: bytes, task_id: bytes) -> None:
    """The trainer's bond stays locked until ``task_id`` is paid."""
    held = view.get(lock_key(trainer), [])
    if task_id not in held:
        view.put(lock_key(trainer), [*held, task_id])


def unlock_bond(view: StateView, trainer: bytes, task_id: bytes) -> None:
    held = [t for t in view.get(lock_key(trainer), []) if t != task_id]
    view.put(lock_key(trainer), held or None)
