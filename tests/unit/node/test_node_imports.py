"""The node process stays light: numpy, scikit-learn and friends load in the
training workers, or on the first call of a route that needs them, never when
the node starts (numpy alone is ~17 MB of a ~105 MB idle node)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "sklearn", "pandas", "scipy", "skops")


def test_node_startup_imports_leave_numpy_and_sklearn_out() -> None:
    code = (
        "import sys, p2pml.cli, p2pml.node.node, p2pml.api.server;"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules];"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"imported at start: {out.stdout.strip()} {out.stderr}"
