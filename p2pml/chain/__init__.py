"""Pure Nakamoto consensus: no asyncio, no sockets, no files.

The node feeds headers and blocks in (with the current time) and persists
the :class:`~p2pml.chain.state.ChainUpdate` each call returns.
"""
