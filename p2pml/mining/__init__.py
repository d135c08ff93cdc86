"""Proof-of-work mining: nonce search in worker processes, async control loop."""
