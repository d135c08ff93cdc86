"""Attestations that came before their beacon block, held until it connects.

A committee member attests as soon as its audit ends; its attestation can
reach a peer before the beacon block does (``attest-too-early`` there), or
even before the result's block (``attest-unknown-result``: the peer lags,
or that block waits for its data). Refused and dropped, it would never be
sent again, and that pool (and what it relays) would lack it.
:class:`AttestOrphans` keeps such attestations until the tip reaches a
given height (the beacon's, or the next block for an unknown result), then
hands them back to be tried again (:class:`p2pml.node.audits.AuditService`).

The bounds are :class:`~p2pml.node.chain_waits.ChainWaits`'s. One entry per
(attester, result): the attester's later variants are ignored. Entries
expire at the end of the attest window, or a bound for an unknown result.
What enters comes from a key that can sit on a committee at the beacon
(the caller's check).
"""

from __future__ import annotations

from p2pml.chain.types import AttestTx
from p2pml.node.chain_waits import PER_PEER_MAX, PER_SIGNER_MAX, TOTAL_MAX, ChainWaits, Waiting

__all__ = ["PER_PEER_MAX", "PER_SIGNER_MAX", "TOTAL_MAX", "AttestOrphans", "Orphan"]

Orphan = Waiting[AttestTx]


class AttestOrphans(ChainWaits[AttestTx]):
    def key(self, tx: AttestTx) -> tuple[bytes, bytes]:
        return (tx.attester, tx.result_id)

    def signer(self, tx: AttestTx) -> bytes:
        return tx.attester
