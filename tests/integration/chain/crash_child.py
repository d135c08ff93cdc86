"""Child process for the crash test: mines into a real store until killed.

Every few blocks it builds a two-block fork from one below the tip, so the
kill also lands in the middle of reorgs.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from p2pml.chain.params import REGTEST
from p2pml.chain.template import build_block, solve
from p2pml.store import BlockStore

MINERS = [bytes([i]) * 32 for i in range(1, 5)]


def main(path: str) -> None:
    store = BlockStore.open(Path(path), REGTEST)
    chain = store.load_chain()
    rng = random.Random()
    start = chain.height
    print("ready", start, flush=True)
    announced = False
    while True:
        base = chain.tip
        if rng.random() < 0.2 and base.parent is not None:
            base = base.parent
            n = 2
        else:
            n = 1
        for _ in range(n):
            blk = solve(
                build_block(
                    REGTEST,
                    base.hash,
                    base.height + 1,
                    chain.next_bits(base),
                    base.header.time + 1,
                    rng.choice(MINERS),
                    extra=rng.randbytes(8),
                )
            )
            update = chain.accept_block(blk, REGTEST.genesis_time + 10**8)
            update.raise_error()
            store.apply(update, chain.tip.hash)
            if not announced and chain.height > start:
                # Committed: the parent waits for this line before its random kill.
                print("committed", chain.height, flush=True)
                announced = True
            entry = chain.entry(blk.hash)
            assert entry is not None
            base = entry


if __name__ == "__main__":
    main(sys.argv[1])
