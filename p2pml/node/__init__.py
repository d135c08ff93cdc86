"""The daemon: small services wired by :class:`~p2pml.node.node.Node`.

=================  =============================================================
``node``           builds the services, one supervisor, ordered stop
``ports``          the protocols the services see of each other
``chain_manager``  async front to the pure ChainState and its SQLite store
``mempool``        tasks and results waiting for a block
``tasks``          admits tasks and results into the mempool
``training``       trains rounds of open tasks, submits our own results
``verifier``       the verdict oracle: re-runs results in worker processes
``verification``   connects blocks waiting for verdicts; checks gossiped results
``mining``         block templates, and blocks our miner finds
``relay``          everything we gossip, and tip announcements
``gossip``         the network's way in (``ChainBackend``): blocks, txs, sync
``admin_token``    the admin API's bearer token file
=================  =============================================================

Only the CLI and the devnet import :class:`~p2pml.node.node.Node` (an
import-linter contract in ``scripts/check``).
"""
