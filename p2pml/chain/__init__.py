"""Pure Nakamoto consensus: no asyncio, no sockets, no files.

The node feeds headers and blocks in (with the current time) and persists
the :class:`~p2pml.chain.state.ChainUpdate` each call returns. Every
transaction type, handler and block hook is listed statically
(:mod:`p2pml.chain.types`, :mod:`p2pml.chain.encoding`,
:mod:`p2pml.chain.txrules`): importing a module registers nothing.
"""
