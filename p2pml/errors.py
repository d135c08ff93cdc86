"""The one exception hierarchy of p2pml.

Every error the project raises on purpose derives from :class:`P2PMLError`,
so callers can catch the family they care about and nothing else::

    P2PMLError
    ├── ConfigError            bad config file, key or value (one clear line)
    ├── DecodeError            bytes that are not a valid encoding (never a raw
    │                          msgpack/struct error): size limits, schema, types
    ├── ValidationError        a consensus or policy rule failed; ``reason`` is a
    │   │                      stable string such as "bad-pow" that tests assert
    │   └── MissingDataError   validation needs bytes not available yet (a dataset
    │                          or model artifact): "pending data", never invalid
    ├── StoreError             the block store is corrupt, from another network,
    │                          or cannot be opened
    ├── NetworkError           libp2p host failures (listen address, dial)
    │   └── PeerMisbehaviour   a peer broke the protocol; carries a penalty
    ├── DatasetError           IPFS dataset layer
    │   ├── DaemonUnavailable  the IPFS daemon cannot be reached (retry later)
    │   ├── CIDMismatch        fetched bytes do not hash to the requested CID
    │   ├── DatasetTooLarge    over the configured maximum size
    │   └── FetchTimeout       the fetch did not finish within its timeout
    │       └── NoProvider     no first block within the start timeout, or
    │                          the CID failed so recently that it is not retried
    ├── TrainingError          a training job failed; ``reason`` says why
    │   └── ModelArtifactError a model artifact is not in the safe format
    ├── NotFoundError          no such task, result, block or peer (API 404)
    ├── ApiError               admin API client errors (CLI and Python client)
    │   └── WaitTimeout        a task did not close within the time waited for
    └── InputError             a user's own file (CSV to predict on, model card)
                               cannot be used as given; one clear line

``reason`` strings are part of the protocol and the API: change them only
with a protocol version bump.
"""

from __future__ import annotations


class P2PMLError(Exception):
    """Base class of every error p2pml raises on purpose."""


class ConfigError(P2PMLError):
    """A config file, key or value is wrong. ``str()`` is one clear line."""


class DecodeError(P2PMLError):
    """Bytes that do not decode to a valid protocol object."""


class ValidationError(P2PMLError):
    """A rule failed. ``reason`` is stable; ``detail`` is for humans."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class MissingDataError(ValidationError):
    """Validation cannot finish until some content-addressed data arrives."""

    def __init__(self, cid: str, detail: str = "") -> None:
        super().__init__("pending-data", detail or f"waiting for {cid}")
        self.cid = cid


class StoreError(P2PMLError):
    """The block store cannot be used as it is."""


class NetworkError(P2PMLError):
    """The libp2p layer failed (listen, dial, protocol)."""


class PeerMisbehaviour(NetworkError):
    """A peer broke the protocol; ``penalty`` is added to its ban score."""

    def __init__(self, reason: str, penalty: int = 100) -> None:
        super().__init__(reason)
        self.reason = reason
        self.penalty = penalty


class DatasetError(P2PMLError):
    """The IPFS dataset layer failed."""


class DaemonUnavailable(DatasetError):
    """The IPFS daemon cannot be reached; callers retry with backoff."""


class CIDMismatch(DatasetError):
    """Fetched bytes do not hash to the requested CID; they were discarded."""


class DatasetTooLarge(DatasetError):
    """A dataset is over the configured maximum size."""


class FetchTimeout(DatasetError):
    """A fetch did not complete within its timeout."""


class NoProvider(FetchTimeout):
    """Nobody sent the first block of a CID within ``ipfs.fetch_start_timeout``
    (or the CID failed that way within ``ipfs.unfetchable_ttl``)."""


class TrainingError(P2PMLError):
    """A training job failed; ``reason`` is stable, ``detail`` for humans."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ModelArtifactError(TrainingError):
    """A model artifact is not in the safe format or holds untrusted types."""

    def __init__(self, detail: str) -> None:
        super().__init__("bad-model-artifact", detail)


class NotFoundError(P2PMLError):
    """What was asked for does not exist here (a task, result, block, peer)."""

    reason = "not-found"


class ApiError(P2PMLError):
    """The admin API answered with an error (used by the CLI)."""

    def __init__(self, status: int, error: str, reason: str = "") -> None:
        super().__init__(f"{error} ({reason})" if reason else error)
        self.status = status
        self.error = error
        self.reason = reason


class WaitTimeout(ApiError):
    """``TaskHandle.wait`` gave up before the task closed (the task goes on)."""

    def __init__(self, task_id: str, timeout: float) -> None:
        super().__init__(0, f"task {task_id[:16]} still open after {timeout:g}s", "wait-timeout")
        self.task_id = task_id


class InputError(P2PMLError):
    """A user's file cannot be used as given. ``str()`` is one clear line."""
