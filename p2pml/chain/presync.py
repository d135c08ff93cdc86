"""Headers pre-sync: a sync session's headers, checked but not stored yet.

A branch's headers enter the block index only once the branch's cumulative
work reaches max(min chain work, our tip's work) (Bitcoin Core's headers
pre-sync, with a bounded in-memory list instead of a compact commitment).
Until then they wait here, each with every header rule already checked, so
a peer cannot make us store (and persist) headers of a branch that could
never become ours, however cheap they were to mine.

Memory bound: ``PRESYNC_MAX_HEADERS`` entries of ~0.6 KB (the entry, its
92-byte header and hashes) in the one session ChainState keeps, ~12 MB.
"""

from __future__ import annotations

from p2pml.chain.index import IndexEntry

PRESYNC_MAX_HEADERS = 20_000


class HeaderPresync:
    """Headers of one peer's sync session whose branch is still too light."""

    def __init__(self, session: str, max_headers: int | None = None) -> None:
        self.session = session
        self.max_headers = PRESYNC_MAX_HEADERS if max_headers is None else max_headers
        self._entries: dict[bytes, IndexEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, block_hash: bytes) -> IndexEntry | None:
        return self._entries.get(block_hash)

    def add(self, e: IndexEntry) -> bool:
        """False (and nothing kept) when the session already holds its cap."""
        if len(self._entries) >= self.max_headers:
            return False
        self._entries[e.hash] = e
        return True

    def take_branch(self, last: IndexEntry, known: dict[bytes, IndexEntry]) -> list[IndexEntry]:
        """``last`` and its held ancestors down to the first one in ``known``
        (the index), oldest first, removed from here."""
        out: list[IndexEntry] = []
        e: IndexEntry | None = last
        while e is not None and e.hash not in known:
            self._entries.pop(e.hash, None)
            out.append(e)
            e = e.parent
        out.reverse()
        return out
