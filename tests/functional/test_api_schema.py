"""The OpenAPI document matches the live API: schemathesis generates requests
from it against a real node; no 5xx, and every response conforms.

POST /peers is left out: generated multiaddrs could point anywhere, and this
project never sends a packet beyond loopback (test_daemon_api covers it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.framework.testnode import NodeSet, TestNode


@pytest.fixture(scope="module")
def live_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    ns = NodeSet(tmp_path_factory.mktemp("schema"))
    node = ns.add(node={"dev_key": 0})
    try:
        # Random requests do not count as testing a route (the call report).
        node.start(env={"P2PML_TEST_CALL_LOG": ""})
        node.mine(2)
        yield node
    finally:
        ns.cleanup()


# No 5xx, documented status codes and content types, schema-valid bodies. The
# positive-data check is left out: a schema cannot say which of its valid
# strings is an allowlisted estimator or a real CID, and those get a 400.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def operations(node: TestNode) -> list[object]:
    schema = schemathesis.openapi.from_url(node.api.base + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    return [op for op in ops if not (op.method.upper() == "POST" and op.path == "/peers")]


def test_api_matches_its_openapi_document(live_node: TestNode) -> None:
    headers = {"Authorization": f"Bearer {live_node.api.token}"}
    ops = operations(live_node)
    assert len(ops) >= 15
    for op in ops:

        @given(case=op.as_strategy())  # type: ignore[attr-defined]
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=120)

        check()
    live_node.check_no_traceback()
