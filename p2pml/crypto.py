"""Ed25519 identities and signatures (pynacl).

Public keys are the raw 32 bytes; signatures are the raw 64 bytes. Every
signed object signs a domain-separated message so a signature made for one
kind of object can never be replayed as another.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from p2pml.errors import ConfigError

PUBKEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
# Signatures already verified, as in Bitcoin Core's signature cache: a
# gossiped transaction is checked before relay, again when the mempool admits
# it and again in the block that mines it. Only successes are kept (keyed by
# a hash of key, signature and message), so the answer never changes.
SIG_CACHE_MAX = 50_000  # ~6 MB


def signing_message(domain: bytes, payload: bytes) -> bytes:
    """The exact bytes signed: ``b"p2pml:" + domain + b":" + payload``."""
    return b"p2pml:" + domain + b":" + payload


@dataclass(frozen=True)
class Identity:
    """An Ed25519 key pair. ``seed`` is the 32-byte private seed."""

    seed: bytes

    @classmethod
    def generate(cls) -> Identity:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != SEED_SIZE:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(seed)

    @property
    def _key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    def sign(self, domain: bytes, payload: bytes) -> bytes:
        return self._key.sign(signing_message(domain, payload)).signature

    def __repr__(self) -> str:  # never print the seed
        return f"Identity(public_key={self.public_key.hex()})"


def verify(public_key: bytes, domain: bytes, payload: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s over (domain, payload)."""
    if len(public_key) != PUBKEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    message = signing_message(domain, payload)
    key = hashlib.sha256(public_key + signature + message).digest()
    with _sig_lock:  # the libp2p thread and the event loop both verify
        if key in _sig_cache:
            _sig_cache.move_to_end(key)
            return True
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
        return False
    with _sig_lock:
        _sig_cache[key] = None
        while len(_sig_cache) > SIG_CACHE_MAX:
            _sig_cache.popitem(last=False)
    return True


_sig_cache: OrderedDict[bytes, None] = OrderedDict()
_sig_lock = threading.Lock()


def load_or_create_identity(path: Path) -> Identity:
    """Read the 32-byte seed at ``path``, creating it (mode 0600) if absent.

    A key file readable by group or others is refused, like ssh does.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        ident = Identity.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(ident.seed.hex().encode() + b"\n")
        return ident
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{path}: key file permissions {oct(mode)} are too open (want 0600)")
        text = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read key file: {exc.strerror}") from None
    try:
        seed = bytes.fromhex(text.decode())
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{path}: key file is not a hex Ed25519 seed") from None
    if len(seed) != SEED_SIZE:
        raise ConfigError(f"{path}: key file must hold a 32-byte seed, has {len(seed)}")
    return Identity(seed)
