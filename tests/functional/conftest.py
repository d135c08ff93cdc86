from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.framework.testnode import NodeSet


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[NodeSet]:
    ns = NodeSet(tmp_path)
    try:
        yield ns
    finally:
        ns.cleanup()
