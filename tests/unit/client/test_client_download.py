"""The client keeps a downloaded model only if its bytes hash to the model CID.

A node (or anything between it and the user) that serves other bytes than
the chain's model CID is caught on the client side: the download is refused
with reason "cid-mismatch" and no file is left behind.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pml.client import Client, TaskHandle
from p2pml.errors import ApiError
from p2pml.ipfs.cid import cid_of_bytes

GOOD = b"PK\x03\x04 the real artifact"
EVIL = b"PK\x03\x04 something else entirely"
TASK = "ab" * 32


def card(cid: str) -> dict[str, object]:
    return {
        "v": 1, "task": TASK, "result": "cd" * 32, "model_cid": cid, "model": "ridge",
        "kind": "regression", "params": {}, "random_state": 1, "target": "y",
        "features": ["a"], "metric": "r2", "metric_value": 0.5,
    }  # fmt: skip


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[str]:
    served: bytes = request.param

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.endswith("/model/card"):
                body, ctype = json.dumps(card(cid_of_bytes(GOOD))).encode(), "application/json"
            else:
                body, ctype = served, "application/octet-stream"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Model-CID", cid_of_bytes(GOOD))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


@pytest.mark.parametrize("node", [EVIL], indirect=True)
def test_other_bytes_than_the_cid_are_refused(node: str, tmp_path: Path) -> None:
    dest = tmp_path / "m.skops"
    with pytest.raises(ApiError) as err:
        TaskHandle(Client(node), TASK).download_model(dest)
    assert err.value.reason == "cid-mismatch"
    assert list(tmp_path.iterdir()) == []  # neither the artifact nor a card


@pytest.mark.parametrize("node", [GOOD], indirect=True)
def test_the_right_bytes_are_kept_with_their_card(node: str, tmp_path: Path) -> None:
    dest = tmp_path / "m.skops"
    TaskHandle(Client(node), TASK).download_model(dest)
    assert dest.read_bytes() == GOOD
    assert json.loads((tmp_path / "m.skops.json").read_text())["model_cid"] == cid_of_bytes(GOOD)
