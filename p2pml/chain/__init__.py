"""Pure Nakamoto consensus: no asyncio, no sockets, no files.

The node feeds headers and blocks in (with the current time) and persists
the :class:`~p2pml.chain.state.ChainUpdate` each call returns.
"""

# Registers the task and result transaction types with the codec and rules.
from p2pml.chain import tasks as _tasks  # noqa: F401
