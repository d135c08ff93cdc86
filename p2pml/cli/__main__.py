"""``python -m p2pml.cli``: the same entry point as the ``p2pml`` script."""

import sys

from p2pml.cli import main

sys.exit(main())
