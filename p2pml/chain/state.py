"""ChainState: the block tree, the best valid tip, connect/disconnect, reorgs.

Pure: the node passes in the current time and a :class:`BlockSource` to read
stored bodies and undo logs, and persists the :class:`ChainUpdate` each call
returns (in one store transaction) before making the next call.

Fork choice is the most cumulative work; among equal work the block whose
data arrived first wins. No operation scans the chain: ancestors are found
through skip pointers (O(log n)), the active chain is an array by height,
and candidate tips are a small set.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from p2pml.chain import rules
from p2pml.chain.index import (
    BlockSource,
    ChainUpdate,
    IndexEntry,
    Status,
    StoredEntry,
    skip_height,
)
from p2pml.chain.ledger import BlockContext, StateView, UndoLog, VerdictOracle, no_verdicts
from p2pml.chain.orphans import OrphanPool
from p2pml.chain.params import NetworkParams
from p2pml.chain.pow import bits_to_target, block_work
from p2pml.chain.presync import HeaderPresync
from p2pml.chain.state_queries import ChainQueries
from p2pml.chain.txrules import BLOCK_HOOKS, handler_for
from p2pml.chain.types import Block, BlockHeader
from p2pml.errors import MissingDataError, StoreError, ValidationError

RECENT_REJECTS_MAX = 10_000
LIGHT_MEMO = 10_000  # light headers whose branch work low_work() remembers
# Refusals that say nothing about the block's own validity.
_TRANSIENT = frozenset({"duplicate", "time-too-new", "bad-tx-root", "prev-unknown"})


class ChainState(ChainQueries):
    """Changes the block tree; its read-only lookups are in ChainQueries."""

    def __init__(self, params: NetworkParams, source: BlockSource) -> None:
        self.params = params
        self.source = source
        self.index: dict[bytes, IndexEntry] = {}
        self.active: list[IndexEntry] = []
        self.state: dict[bytes, Any] = {}
        self.orphans = OrphanPool()
        self._presync: HeaderPresync | None = None  # one sync session's held headers
        self._candidates: set[IndexEntry] = set()
        self._unlinked: dict[bytes, list[IndexEntry]] = {}  # parent hash -> children w/ data
        self._failed: set[IndexEntry] = set()
        self._tips: set[IndexEntry] = set()
        # Invalid blocks that never entered the index, so orphans building on
        # them are refused at once instead of waiting in the pool.
        self._recent_rejects: OrderedDict[bytes, str] = OrderedDict()
        # Branch work of recent headers low_work() found light (never stored).
        self._light: OrderedDict[bytes, int] = OrderedDict()
        self._seq = 0
        # Bodies and undo logs produced by the current call, not yet persisted.
        self._pending_blocks: dict[bytes, Block] = {}
        self._pending_undo: dict[bytes, UndoLog] = {}
        # Result verdicts come from the node (it re-runs models in workers).
        self.verdicts: VerdictOracle = no_verdicts
        # Candidate tips whose branch waits for data (a verdict), and the
        # blocks on such branches that could not connect for lack of it.
        self.waiting: set[IndexEntry] = set()
        self._lacking_data: set[IndexEntry] = set()

    # -- construction ------------------------------------------------------

    @classmethod
    def create(cls, params: NetworkParams, source: BlockSource) -> tuple[ChainState, ChainUpdate]:
        """A new chain holding only genesis; persist the returned update."""
        cs = cls(params, source)
        g = params.genesis
        e = IndexEntry(
            hash=g.hash,
            header=g.header,
            parent=None,
            height=0,
            chain_work=block_work(bits_to_target(g.header.bits)),
        )
        cs._add_entry(e)
        update = ChainUpdate()
        update.new_entries.append(e)
        cs._receive_data(e, g, update)
        cs._activate(update)
        cs._flush_pending()
        return cs, update

    @classmethod
    def load(
        cls,
        params: NetworkParams,
        source: BlockSource,
        entries: Iterable[StoredEntry],
        tip_hash: bytes,
        state: dict[bytes, Any],
    ) -> ChainState:
        """Rebuild from a store (one pass over the index, at start only)."""
        cs = cls(params, source)
        for s in sorted(entries, key=lambda s: s.header.height):
            h = s.header.hash
            parent = cs.index.get(s.header.prev_hash)
            if s.header.height > 0 and parent is None:
                raise StoreError(f"block index: parent of {h.hex()} is missing")
            e = IndexEntry(
                hash=h,
                header=s.header,
                parent=parent,
                height=s.header.height,
                chain_work=(parent.chain_work if parent else 0)
                + block_work(bits_to_target(s.header.bits)),
                status=s.status,
                has_data=s.has_data,
                seq=s.seq,
                invalid_reason=s.invalid_reason,
            )
            e.chain_has_data = e.has_data and (parent is None or parent.chain_has_data)
            cs._add_entry(e)
            cs._seq = max(cs._seq, s.seq)
            if e.status is Status.INVALID:
                cs._failed.add(e)
            if e.has_data and not e.chain_has_data and parent is not None:
                cs._unlinked.setdefault(parent.hash, []).append(e)
        if params.genesis_hash not in cs.index:
            raise StoreError("block index has no genesis block for this network")
        tip = cs.index.get(tip_hash)
        if tip is None or not tip.chain_has_data or tip.status.failed:
            raise StoreError("stored tip is missing, lacks data or is invalid")
        chain: list[IndexEntry] = []
        cur: IndexEntry | None = tip
        while cur is not None:
            chain.append(cur)
            cur = cur.parent
        cs.active = chain[::-1]
        cs.state = dict(state)
        for e in cs._tips:
            if e.chain_has_data and not e.status.failed and cs._better(e, tip):
                # Heavier than the stored tip: it was waiting for data (or
                # we stopped mid-way); the node retries it (retry_waiting).
                cs.waiting.add(e)
        cs._candidates.add(tip)
        return cs

    # -- headers -------------------------------------------------------------

    def accept_header(self, header: BlockHeader, now: int, update: ChainUpdate) -> IndexEntry:
        h = header.hash
        e = self.index.get(h)
        if e is not None:
            if e.status.failed:
                raise ValidationError("duplicate-invalid", e.invalid_reason)
            return e
        e = self._checked_entry(header, h, self.index.get(header.prev_hash), now)
        self._add_entry(e)
        update.new_entries.append(e)
        return e

    def _checked_entry(
        self, header: BlockHeader, block_hash: bytes, parent: IndexEntry | None, now: int
    ) -> IndexEntry:
        """An entry for ``header`` after every header rule, not in the index.
        ``block_hash`` is its hash, which every caller has already computed."""
        rules.check_header(header, self.params)
        if parent is None:
            raise ValidationError("prev-unknown", f"parent {header.prev_hash.hex()} unknown")
        if parent.status.failed or self._descends_from_failed(parent):
            raise ValidationError("bad-prev", "parent is invalid")
        rules.check_header_context(
            header,
            parent.height,
            self.next_bits(parent),
            self.median_time_past(parent),
            now,
            self.params,
        )
        rules.check_timewarp(header, parent.header.time, self.params)
        e = IndexEntry(
            hash=block_hash,
            header=header,
            parent=parent,
            height=parent.height + 1,
            chain_work=parent.chain_work + block_work(bits_to_target(header.bits)),
        )
        e.skip = parent.ancestor(skip_height(e.height))
        return e

    def accept_headers(
        self, headers: list[BlockHeader], now: int, session: str | None = None
    ) -> ChainUpdate:
        """A batch from sync: each must connect to the previous, the index, or
        the headers this ``session`` sent before (held in pre-sync).

        Headers pass every header rule, then wait in memory until the branch
        of the last one reaches :meth:`work_threshold`; only then does that
        branch enter the index (``update.new_entries``). Stops at the first
        bad header; ``update.error`` says why. ``session`` (the peer) keeps
        what it sent across calls; one session is kept at a time, and None
        holds nothing past this call.
        """
        update = ChainUpdate()
        pre = self._presync_for(session)
        held_before = len(pre)
        last: IndexEntry | None = None
        try:
            for header in headers:
                h = header.hash
                e = self.index.get(h)
                if e is not None and e.status.failed:
                    raise ValidationError("duplicate-invalid", e.invalid_reason)
                if e is None:
                    e = pre.get(h)
                if e is None:
                    parent = self.index.get(header.prev_hash)
                    if parent is None:
                        parent = pre.get(header.prev_hash)
                    e = self._checked_entry(header, h, parent, now)
                    if not pre.add(e):
                        raise ValidationError(
                            "presync-full", f"more than {pre.max_headers} headers below our work"
                        )
                last = e
                update.headers_ok += 1
                update.headers_work = e.chain_work
        except ValidationError as err:
            update.error = err
        reached = last is not None and last.chain_work >= self.work_threshold()
        if last is not None and reached and last.hash not in self.index:
            self._commit_presync(pre.take_branch(last, self.index), update)
        update.headers_held = len(pre)
        update.headers_new_held = max(0, len(pre) - held_before)
        return update

    def _presync_for(self, session: str | None) -> HeaderPresync:
        if session is None:
            return HeaderPresync("")
        if self._presync is None or self._presync.session != session:
            self._presync = HeaderPresync(session)
        return self._presync

    def _commit_presync(self, branch: list[IndexEntry], update: ChainUpdate) -> None:
        for x in branch:
            # Relink to the index's own objects: a held parent may have
            # entered the index meanwhile as another object (from gossip).
            parent = self.index.get(x.header.prev_hash)
            if parent is None or parent.status.failed or self._descends_from_failed(parent):
                update.error = update.error or ValidationError("bad-prev", "parent is invalid")
                return
            x.parent = parent
            x.skip = None  # it may point at a held object: walk the index's anew
            self._add_entry(x)
            update.new_entries.append(x)

    # -- blocks --------------------------------------------------------------

    def accept_block(self, block: Block, now: int, requested: bool = True) -> ChainUpdate:
        """Store a block, follow the most work, then adopt waiting orphans.

        Never raises ValidationError: ``update.error`` says why this block was
        refused; blocks that failed on the way (connected as part of a reorg,
        or adopted orphans) are in ``update.rejected``. Persist the update
        whatever it says: it may hold headers and statuses learned meanwhile.

        ``requested=False`` (gossip: nobody asked for it): a block whose branch
        (with the orphans pooled on it) would stay below :meth:`work_threshold`
        is not kept at all, neither body nor header (``update.low_work``).
        Otherwise anyone could make us store side branches forked at an old
        height, where work is cheap; sync fetches headers and bodies if that
        branch ever gets ahead.
        """
        update = ChainUpdate()
        try:
            update.low_work = not self._accept_one(block, now, update, requested)
            if update.low_work and block.hash not in self.index:
                # Its pooled descendants were counted and still fall short.
                self.orphans.drop_descendants(block.hash)
            elif not update.orphaned:
                self._activate(update)
                self._adopt_orphans(block.hash, now, update)
        except ValidationError as err:
            update.error = err
            self._note_reject(block.hash, err.reason)
        finally:
            self._flush_pending()
        # The block and the orphans it let in: children adopted after a
        # lighter parent may put the branch ahead though the parent is bodiless.
        touched = [*update.new_entries, self.index.get(block.hash)]
        update.needs_ancestors = any(
            x is not None
            and x.has_data
            and not x.chain_has_data
            and not x.status.failed
            and x.chain_work > self.tip.chain_work
            for x in touched
        )
        return update

    def _accept_one(
        self, block: Block, now: int, update: ChainUpdate, requested: bool = True
    ) -> bool:
        """False if only the header was kept (an unrequested, lighter block)."""
        h = block.hash
        e = self.index.get(h)
        if e is not None and e.status.failed:
            raise ValidationError("duplicate-invalid", e.invalid_reason)
        if e is not None and e.has_data:
            raise ValidationError("duplicate", "block already known")
        if e is None and block.prev_hash in self._recent_rejects:
            raise ValidationError("bad-prev", "parent was rejected")
        if e is None and block.prev_hash not in self.index:
            rules.check_header(block.header, self.params)  # PoW before pooling
            if h in self.orphans:
                raise ValidationError("duplicate", "orphan already pooled")
            self.orphans.add(block, requested)
            update.orphaned = True
            return True
        if e is None and not requested:
            rules.check_header(block.header, self.params)
        if e is None and not requested and self.low_work(block.header):
            return False  # neither body nor header: sync fetches both if it ever leads
        if e is None:
            e = self.accept_header(block.header, now, update)
        elif e.parent is not None and self._descends_from_failed(e.parent):
            self._mark_failed_child(e, "bad-prev", update)
            raise ValidationError("bad-prev", "descends from an invalid block")
        extended = e.chain_work + self.orphans.extension_work(h) if not requested else 0
        if not requested and self.active and extended < self.work_threshold():
            return False
        ids = rules.check_tx_root(block)  # mismatch: bad body, header stays fine
        try:
            rules.check_block_body(block, ids, self.params)
        except ValidationError as err:
            self._mark_invalid(e, err.reason, update)
            raise
        self._receive_data(e, block, update)
        return True

    def low_work(self, header: BlockHeader) -> bool:
        """True for a new header on a known, sound parent whose branch (with
        the orphans pooled on it) stays below :meth:`work_threshold`.

        A child of an invalid block is refused as such, not ignored as light.
        Never the header's own PoW (check that first): the network checks
        this before a gossiped block's signatures. Writes only a bounded memo
        of the light headers' branch work (for their children), never the
        chain; it keeps work, not verdicts, so each child is compared with
        the threshold of its own time.
        """
        if not self.active or header.hash in self.index:
            return False
        parent = self.index.get(header.prev_hash)
        own = block_work(bits_to_target(header.bits))
        if parent is None:
            # A child of a header this said was light (its parent was dropped,
            # so it would be an orphan and get every stateless check, then a
            # sync walk): light too while its branch stays below.
            light = self._light.get(header.prev_hash)
            if light is None:
                return False
            work = light + own
        elif parent.status.failed or self._descends_from_failed(parent):
            return False
        else:
            work = parent.chain_work + own
        if work + self.orphans.extension_work(header.hash) >= self.work_threshold():
            return False
        self._light[header.hash] = work
        self._light.move_to_end(header.hash)
        while len(self._light) > LIGHT_MEMO:
            self._light.popitem(last=False)
        return True

    def _adopt_orphans(self, parent_hash: bytes, now: int, update: ChainUpdate) -> None:
        stack = [parent_hash]
        while stack:
            for child, requested in self.orphans.take_children(stack.pop()):
                try:
                    self._accept_one(child, now, update, requested)
                except ValidationError as err:
                    update.rejected.append((child.hash, err.reason))
                    self._note_reject(child.hash, err.reason)
                    continue
                if child.hash not in self.index:  # too light: nothing kept
                    self.orphans.drop_descendants(child.hash)
                    continue
                self._activate(update)
                stack.append(child.hash)

    def _receive_data(self, e: IndexEntry, block: Block, update: ChainUpdate) -> None:
        e.has_data = True
        if e.status is Status.HEADER:
            e.status = Status.DATA
        self._pending_blocks[e.hash] = block
        update.new_blocks.append(block)
        update.status_changed.append(e)
        if e.parent is None or e.parent.chain_has_data:
            # This block (and any descendants already waiting) now have full data.
            todo = [e]
            while todo:
                x = todo.pop()
                x.chain_has_data = True
                self._seq += 1
                x.seq = self._seq
                if x is not e:
                    update.status_changed.append(x)
                if not x.status.failed and self._better(x, self.tip if self.active else None):
                    self._candidates.add(x)
                todo.extend(self._unlinked.pop(x.hash, ()))
        else:
            self._unlinked.setdefault(e.parent.hash, []).append(e)

    # -- activation ------------------------------------------------------------

    def _best_candidate(self) -> IndexEntry | None:
        best: IndexEntry | None = None
        for c in list(self._candidates):
            if c.status.failed:
                self._candidates.discard(c)
                continue
            if best is None or self._better(c, best):
                best = c
        return best

    def _activate(self, update: ChainUpdate) -> None:
        while True:
            best = self._best_candidate()
            if best is None or (self.active and best is self.tip):
                break
            if self.active and not self._better(best, self.tip):
                break
            fork = self._fork_point(best)
            path = []
            cur: IndexEntry | None = best
            while cur is not None and cur is not fork:
                path.append(cur)
                cur = cur.parent
            path.reverse()
            if any(e in self._lacking_data for e in path):
                # Known to wait for data: do not tear the tip down to find out again.
                self.waiting.add(best)
                self._candidates.discard(best)
                continue
            while self.active and self.tip is not fork:
                self._disconnect_tip(update)
            failed = False
            for i, e in enumerate(path):
                try:
                    self._connect(e, update)
                except MissingDataError as err:
                    # Not invalid, not connectable yet: park the branch until
                    # the node has the data, and fall back to the best we can.
                    update.waiting.append((e.hash, err.cid))
                    self._lacking_data.add(e)
                    self.waiting.add(best)
                    self._candidates.discard(best)
                    failed = True
                    break
                except ValidationError as err:
                    if not e.status.failed:
                        self._mark_invalid(e, err.reason, update)
                        update.rejected.append((e.hash, err.reason))
                    for d in path[i + 1 :]:
                        self._mark_failed_child(d, e.invalid_reason, update)
                    failed = True
                    break
            if not failed:
                break
        tip = self.tip
        self._candidates = {c for c in self._candidates if c is tip or self._better(c, tip)}

    def _connect(self, e: IndexEntry, update: ChainUpdate) -> None:
        if e.status.failed:
            raise ValidationError(e.invalid_reason or "bad-prev", "known invalid")
        block = self.get_block(e.hash)
        if block is None:
            raise StoreError(f"body of {e.hash.hex()} missing from the store")
        # A block connected before was valid on these same ancestors, and
        # validity is deterministic: its results need no second inclusion
        # verdict (which may be unavailable after a restart). Disputes
        # resolving in it still ask: both of their outcomes are valid.
        oracle = _known_valid if e.status is Status.VALID else self.verdicts
        ctx = BlockContext(
            self.params,
            e.height,
            e.hash,
            e.header.time,
            verdict=oracle,
            dispute_verdict=self.verdicts,
        )
        view = StateView(self.state)
        for tx in block.txs[1:]:
            handler_for(tx).apply(tx, view, ctx)
        if e.parent is not None:  # genesis pays nobody: its coinbase is not checked
            for hook in BLOCK_HOOKS:
                hook(view, ctx)
            cb = block.txs[0]
            handler_for(cb).apply(cb, view, ctx)
        for k, v in view.writes.items():
            if v is None:
                self.state.pop(k, None)
            else:
                self.state[k] = v
            update.state_changes[k] = v
        undo = view.undo_log()
        self._pending_undo[e.hash] = undo
        update.connected.append((e.hash, undo))
        if e.status is not Status.VALID:
            e.status = Status.VALID
            update.status_changed.append(e)
        self.active.append(e)
        update.tip_changed = True

    def _disconnect_tip(self, update: ChainUpdate) -> None:
        e = self.tip
        undo = self._pending_undo.get(e.hash)
        if undo is None:
            undo = self.source.get_undo(e.hash)
        if undo is None:
            raise StoreError(f"undo data of {e.hash.hex()} missing from the store")
        for k, old in reversed(undo):
            if old is None:
                self.state.pop(k, None)
            else:
                self.state[k] = old
            update.state_changes[k] = old
        self.active.pop()
        update.disconnected.append(e.hash)
        update.tip_changed = True
        self._candidates.add(e)

    def retry_waiting(self) -> ChainUpdate:
        """Try again the branches that waited for data (the node has more now)."""
        update = ChainUpdate()
        self._lacking_data.clear()
        try:
            for e in list(self.waiting):
                self.waiting.discard(e)
                if not e.status.failed and self._better(e, self.tip):
                    self._candidates.add(e)
            self._activate(update)
        finally:
            self._flush_pending()
        return update

    # -- bookkeeping -----------------------------------------------------------

    def _add_entry(self, e: IndexEntry) -> None:
        if e.parent is not None:
            if e.skip is None:  # a checked entry has it already: one walk a block
                e.skip = e.parent.ancestor(skip_height(e.height))
            self._tips.discard(e.parent)
        self.index[e.hash] = e
        self._tips.add(e)

    def _mark_invalid(self, e: IndexEntry, reason: str, update: ChainUpdate) -> None:
        e.status = Status.INVALID
        e.invalid_reason = reason
        self._failed.add(e)
        update.status_changed.append(e)
        self._candidates.discard(e)
        for c in list(self._candidates):
            if c.height > e.height and c.ancestor(e.height) is e:
                self._mark_failed_child(c, reason, update)

    def _mark_failed_child(self, e: IndexEntry, reason: str, update: ChainUpdate) -> None:
        if not e.status.failed:
            e.status = Status.FAILED_CHILD
            e.invalid_reason = reason
            update.status_changed.append(e)
        self._candidates.discard(e)

    def _note_reject(self, block_hash: bytes, reason: str) -> None:
        if reason in _TRANSIENT:
            return
        rejected = [(block_hash, reason)]
        rejected += [(h, "bad-prev") for h in self.orphans.drop_descendants(block_hash)]
        for h, r in rejected:
            if h not in self.index:
                self._recent_rejects[h] = r
        while len(self._recent_rejects) > RECENT_REJECTS_MAX:
            self._recent_rejects.popitem(last=False)

    def _flush_pending(self) -> None:
        self._pending_blocks.clear()
        self._pending_undo.clear()


def _known_valid(_tx: Any, _task: dict[str, Any], _audit: bool) -> str:
    return ""
