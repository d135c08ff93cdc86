"""p2pml: a peer-to-peer network for decentralized machine learning."""

__version__ = "0.1.0"
