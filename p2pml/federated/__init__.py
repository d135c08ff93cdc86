"""Federated learning's pure core (issue 16): parameter vectors (linear models,
MLPs, exact-merge statistics), local training from the global model,
deterministic aggregation, clipping, each participant's own secret DP noise,
the canonical model hash and the privacy accountant.

Pure like consensus: numpy and scikit-learn, no asyncio, sockets or files, and
nothing of the node, network, API, CLI or IPFS (an import-linter contract).
docs/federated.md specifies the protocol these modules implement.
"""
