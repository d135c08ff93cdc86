"""The training layer: building allowlisted estimators, chain-seeded
partitions, training and verification in worker processes, safe model
artifacts. The rules a task must follow are consensus data in
:mod:`p2pml.chain` (task spec, allowlist, metrics)."""
