"""IPFS dataset layer: the DatasetStore protocol and its backends."""
