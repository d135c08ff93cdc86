"""The gossip topic registry: topic kind -> decoder, stateless check, handler.

Blocks are registered by the service; the node plugs tasks and results in
with :meth:`TopicRegistry.register` before ``P2PService.start()``::

    svc.topics.register(TopicSpec(
        kind="tasks", max_bytes=64 * 1024,
        decode=decode_task,            # bytes -> obj, raises DecodeError
        check=check_task_signature,    # obj -> None, raises ValidationError
    ))                                 # handler default: backend.on_gossip

``decode`` and ``check`` run in the libp2p (trio) thread before relay, so
they must be pure and thread-safe (``precheck`` and ``context``: see
TopicSpec); ``handle`` runs on the asyncio loop and its
:class:`~p2pml.net.backend.Verdict` decides relay and penalties.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from p2pml.net.backend import Verdict
from p2pml.net.protocol import topic_name

Decoder = Callable[[bytes], Any]
Checker = Callable[[Any], None]
Handler = Callable[[Any, str], Awaitable[Verdict]]


@dataclass(frozen=True)
class TopicSpec:
    kind: str
    max_bytes: int
    decode: Decoder
    check: Checker
    handle: Handler | None = None  # None: ChainBackend.on_gossip(kind, obj, peer)
    queue_size: int = 256  # messages waiting for ``handle``; beyond: dropped, counted
    encode: Callable[[Any], bytes] | None = None  # for publish(kind, obj)
    # Optional, before ``decode`` and ``check``: ``peek(data)`` a cheap view
    # (e.g. a block's header; DecodeError if malformed; without it the view
    # is the decoded object), ``precheck(view)`` in the trio thread (e.g.
    # PoW), then ``context(view, peer)`` on the asyncio loop (reads node
    # state: is the block's branch too light?). The checks raise
    # ValidationError; a reason in protocol.BENIGN_REASONS drops the message
    # unpenalised, so decoding and ``check``'s signatures are never paid.
    peek: Decoder | None = None
    precheck: Checker | None = None
    context: Callable[[Any, str], None] | None = None


class TopicRegistry:
    def __init__(self, network: str) -> None:
        self.network = network
        self._by_kind: dict[str, TopicSpec] = {}
        self._by_topic: dict[str, TopicSpec] = {}
        self.frozen = False

    def register(self, spec: TopicSpec) -> None:
        if self.frozen:
            raise RuntimeError("register topics before P2PService.start()")
        if spec.kind in self._by_kind:
            raise ValueError(f"topic kind {spec.kind!r} already registered")
        self._by_kind[spec.kind] = spec
        self._by_topic[self.topic(spec.kind)] = spec

    def topic(self, kind: str) -> str:
        return topic_name(self.network, kind)

    def by_topic(self, topic: str) -> TopicSpec | None:
        return self._by_topic.get(topic)

    def by_kind(self, kind: str) -> TopicSpec | None:
        return self._by_kind.get(kind)

    def topics(self) -> list[str]:
        return list(self._by_topic)

    def kinds(self) -> list[str]:
        return list(self._by_kind)
