"""Well-known identities for embedded IPFS nodes of hand-run dev networks.

Kubo makes up a random peer id when it creates its repo, so a config file
cannot name another node's IPFS address in advance. With ``[ipfs]
dev_identity = N`` the embedded node uses key N of this well-known list
instead (devnet and regtest only, like ``[node] dev_key``), and the configs in
``configs/devnet/`` list each other's ``/ip4/127.0.0.1/tcp/420N/p2p/<id>``.

The key is an Ed25519 seed derived from N; Kubo's config wants the libp2p
protobuf encoding of the private key (type 1 = Ed25519, data = seed + public
key) in base64, and the peer id is the identity multihash of the encoded
public key in base58btc.
"""

from __future__ import annotations

import base64
import hashlib

from nacl.signing import SigningKey

from p2pml.cidv0 import b58encode

_ED25519 = b"\x08\x01"  # protobuf field 1 (KeyType) = 1 (Ed25519)


def dev_ipfs_identity(index: int) -> dict[str, str]:
    """Kubo's ``Identity`` config section for well-known IPFS key ``index``."""
    seed = hashlib.sha256(b"p2pml dev ipfs key %d" % index).digest()
    public = bytes(SigningKey(seed).verify_key)
    private_pb = _ED25519 + b"\x12\x40" + seed + public
    public_pb = _ED25519 + b"\x12\x20" + public
    peer_id = b58encode(b"\x00" + bytes([len(public_pb)]) + public_pb)
    return {"PeerID": peer_id, "PrivKey": base64.b64encode(private_pb).decode()}
