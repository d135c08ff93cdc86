"""Well-known embedded IPFS identities: the peer id Kubo will derive from the
key we hand it is the one other nodes' configs name; config misuse is refused."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pml.config import load_settings
from p2pml.errors import ConfigError
from p2pml.ipfs.devidentity import dev_ipfs_identity


def test_peer_id_is_libp2p_s_id_of_the_key() -> None:
    ids = set()
    for i in range(4):
        ident = dev_ipfs_identity(i)
        pair = create_new_key_pair(hashlib.sha256(b"p2pml dev ipfs key %d" % i).digest())
        assert ident["PeerID"] == str(ID.from_pubkey(pair.public_key))
        raw = base64.b64decode(ident["PrivKey"])
        assert raw[:4] == b"\x08\x01\x12\x40" and len(raw) == 68  # Ed25519, seed + public
        ids.add(ident["PeerID"])
    assert len(ids) == 4


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[node]\nnetwork = "main"\n[ipfs]\ndev_identity = 0\n', "devnet and regtest only"),
        ('[node]\nnetwork = "devnet"\n[ipfs]\ndev_identity = 999\n', "999: there are"),
        (
            '[node]\nnetwork = "devnet"\n[ipfs]\nmode = "sidecar"\ndev_identity = 1\n',
            'only for mode = "embedded"',
        ),
    ],
)
def test_config_refuses_misuse(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})
