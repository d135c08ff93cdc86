"""The docker deployment, checked without a Docker engine.

The compose file, the node configs it mounts, the image's entrypoint and the
Kubo sidecar setup must agree: every node bootstraps to other node services
on the port they listen on, talks to an existing Kubo service on 5002, and
the sidecars form a private network with no public bootstrap. The Kubo init
script is run for real, against a stub ``ipfs`` that edits a JSON config.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from nacl.signing import SigningKey

from p2pml.chain.params import dev_identity
from p2pml.cli import build_parser, cmd_node
from p2pml.config import Settings, load_settings
from p2pml.net.host import peer_id_of

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
KUBO = DOCKER / "kubo"
INIT_SCRIPT = KUBO / "001-p2pml-private.sh"
DEMO = ROOT / "scripts" / "docker-demo"
CONFIG_IN_IMAGE = "/etc/p2pml/node.toml"


# -- helpers -----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    svcs: dict[str, dict[str, Any]] = compose()["services"]
    return svcs


def node_services() -> dict[str, dict[str, Any]]:
    return {k: v for k, v in services().items() if k.startswith("node")}


def kubo_services() -> dict[str, dict[str, Any]]:
    return {k: v for k, v in services().items() if str(v.get("image", "")).startswith("ipfs/kubo")}


def binds(svc: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a service: container path -> host path (relative to docker/)."""
    out = {}
    for v in svc.get("volumes", []):
        src, target, *_ = v.split(":")
        if src.startswith((".", "/")):
            out[target] = (DOCKER / src).resolve()
    return out


def node_settings(name: str) -> Settings:
    return load_settings(binds(services()[name])[CONFIG_IN_IMAGE], env={})


def dockerfile_instructions() -> list[list[tuple[str, str]]]:
    """Stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        stages[-1].append((instr.upper(), rest.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_instructions()[-1]


def instruction(name: str) -> str:
    found = [rest for instr, rest in final_stage() if instr == name]
    assert found, f"final stage has no {name}"
    return found[-1]  # the last one wins, as in docker


def tcp_port(maddr: str) -> int:
    m = re.search(r"/tcp/(\d+)", maddr)
    assert m, maddr
    return int(m.group(1))


def identities() -> dict[int, tuple[str, str]]:
    out = {}
    for line in (KUBO / "identities").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            idx, pid, priv = line.split()
            out[int(idx)] = (pid, priv)
    return out


# -- the compose file and the configs it mounts -------------------------------------


def test_compose_has_three_nodes_and_three_kubo_sidecars() -> None:
    assert set(node_services()) == {"node1", "node2", "node3"}
    assert set(kubo_services()) == {"ipfs1", "ipfs2", "ipfs3"}


def test_kubo_image_is_pinned() -> None:
    for name, svc in kubo_services().items():
        image = svc["image"]
        assert re.fullmatch(r"ipfs/kubo:v\d+\.\d+\.\d+", image), f"{name}: {image} is not pinned"


def test_every_bind_mount_exists() -> None:
    for name, svc in services().items():
        for target, src in binds(svc).items():
            assert src.exists(), f"{name}: {src} (mounted at {target}) does not exist"


@pytest.mark.parametrize("name", ["node1", "node2", "node3"])
def test_node_config_is_mounted_and_loads(name: str) -> None:
    src = binds(services()[name])[CONFIG_IN_IMAGE]
    assert src == ROOT / "configs" / "docker" / f"{name}.toml"
    s = load_settings(src, env={})
    assert s.node.network == "devnet"
    assert s.node.dev_key == int(name[-1]) - 1


def test_image_runs_p2pml_node_with_the_mounted_config() -> None:
    entry = json.loads(instruction("ENTRYPOINT"))
    cmd = json.loads(instruction("CMD"))
    assert entry[0] == "p2pml"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["p2pml"] == "p2pml.cli:main"
    args = build_parser().parse_args(entry[1:] + cmd)
    assert args.fn is cmd_node
    assert args.config == CONFIG_IN_IMAGE
    for name, svc in node_services().items():
        assert "command" not in svc and "entrypoint" not in svc, name


def test_nodes_bootstrap_to_other_node_services_on_their_listen_ports() -> None:
    nodes = {name: node_settings(name) for name in node_services()}
    for name, s in nodes.items():
        targets = set()
        for entry in s.p2p.bootstrap:
            m = re.fullmatch(r"/dns4/([a-z0-9-]+)/tcp/(\d+)/p2p/(\w+)", entry)
            assert m, f"{name}: {entry} is not /dns4/<service>/tcp/<port>/p2p/<id>"
            other, port, peer = m.group(1), int(m.group(2)), m.group(3)
            assert other in nodes and other != name, f"{name}: {entry}"
            assert port in {tcp_port(a) for a in nodes[other].p2p.listen}, entry
            assert peer == peer_id_of(dev_identity(nodes[other].node.dev_key).seed), entry
            targets.add(other)
        assert targets == set(nodes) - {name}


def test_nodes_use_their_own_kubo_sidecar_on_5002() -> None:
    kubos = kubo_services()
    for name, svc in node_services().items():
        s = node_settings(name)
        assert s.ipfs.mode == "sidecar"
        m = re.fullmatch(r"/dns4/([a-z0-9-]+)/tcp/(\d+)", s.ipfs.api)
        assert m, s.ipfs.api
        assert m.group(1) in kubos and int(m.group(2)) == 5002
        assert m.group(1) == f"ipfs{name[-1]}"
        assert svc["depends_on"][m.group(1)]["condition"] == "service_healthy"


def test_admin_api_published_on_host_loopback_only() -> None:
    for name, svc in node_services().items():
        s = node_settings(name)
        host, _, port = s.admin.listen.rpartition(":")
        assert host == "0.0.0.0"  # inside the container, so the published port reaches it
        assert svc["ports"] == [f"127.0.0.1:{8080 + int(name[-1])}:{port}"]
    for name, svc in kubo_services().items():
        assert "ports" not in svc, f"{name} must not be published"


def test_private_network_and_isolated_sidecars() -> None:
    networks = compose()["networks"]
    internal = {n for n, cfg in networks.items() if (cfg or {}).get("internal") is True}
    assert internal
    for name, svc in services().items():
        assert set(svc["networks"]) & internal, f"{name} is not on the internal network"
    for name, svc in kubo_services().items():
        assert set(svc["networks"]) <= internal, f"{name} may reach beyond the compose network"


def test_healthchecks() -> None:
    check = instruction("HEALTHCHECK")
    assert "/status" in check or "P2PML_HEALTH_URL" in check
    env = instruction("ENV")
    url = re.search(r"P2PML_HEALTH_URL=(\S+)", env)
    assert url and url.group(1).endswith("/status")
    port = int(re.search(r":(\d+)/status", url.group(1)).group(1))  # type: ignore[union-attr]
    for name in node_services():
        assert node_settings(name).admin.listen.endswith(f":{port}"), name
    for name, svc in kubo_services().items():
        assert "tcp/5002" in " ".join(svc["healthcheck"]["test"]), name


def test_image_is_slim_python_311_and_not_root() -> None:
    base = dockerfile_instructions()[-1][0][1]
    assert base.startswith("python:3.11-slim")
    user = instruction("USER")
    assert user.split(":")[0] not in ("root", "0")


def test_build_context_ignore_file_keeps_what_the_dockerfile_copies() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # allowlist: .venv and node data stay out of the context
    for stage in dockerfile_instructions():
        for instr, rest in stage:
            if instr == "COPY" and not rest.startswith("--from"):
                *sources, _dest = rest.split()
                for src in sources:
                    assert src.rstrip("/") in allowed, f"COPY {src} is excluded by the ignore file"
                    assert (ROOT / src).exists(), src


# -- the Kubo sidecars: private network ------------------------------------------------


def test_kubo_services_run_the_private_network_init_script() -> None:
    for name, svc in kubo_services().items():
        b = binds(svc)
        init = [t for t in b if t.startswith("/container-init.d/") and t.endswith(".sh")]
        assert [b[t] for t in init] == [INIT_SCRIPT], name
        assert b["/p2pml"] == KUBO, name
        env = svc["environment"]
        assert env["LIBP2P_FORCE_PNET"] == "1", name
        assert env["KUBO_INDEX"] == name.removeprefix("ipfs"), name


def test_swarm_key_format() -> None:
    lines = (KUBO / "swarm.key").read_text().splitlines()
    assert lines[:2] == ["/key/swarm/psk/1.0.0/", "/base16/"]
    assert re.fullmatch(r"[0-9a-f]{64}", lines[2])


def test_kubo_identities_are_the_documented_well_known_keys() -> None:
    ids = identities()
    assert set(ids) == {int(n.removeprefix("ipfs")) for n in kubo_services()}
    for i, (pid, priv) in ids.items():
        seed = hashlib.sha256(b"p2pml docker kubo %d" % i).digest()
        public = bytes(SigningKey(seed).verify_key)
        # Kubo's Identity.PrivKey: libp2p protobuf {Type: Ed25519, Data: seed || public}.
        assert base64.b64decode(priv) == b"\x08\x01\x12\x40" + seed + public
        assert pid == peer_id_of(seed)


STUB_IPFS = """#!{python}
# Stand-in for the ipfs CLI: `config [--json] KEY [VALUE]` and `bootstrap rm --all`
# on $IPFS_PATH/config, written the way Kubo writes it (2-space indented JSON).
import json, os, sys
path = os.path.join(os.environ["IPFS_PATH"], "config")
cfg = json.load(open(path))
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[:3] == ["bootstrap", "rm", "--all"]:
    cfg["Bootstrap"] = []
elif args[0] == "config":
    as_json = args[1] == "--json"
    key, *value = args[2:] if as_json else args[1:]
    parts = key.split(".")
    if not value:
        node = cfg
        for p in parts:
            node = node[p]
        print(node)
        sys.exit(0)
    if key.startswith("Identity"):
        sys.exit("Error: cannot show or change private key through API")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {{}})
    node[parts[-1]] = json.loads(value[0]) if as_json else value[0]
else:
    sys.exit("stub ipfs: unsupported " + " ".join(args))
json.dump(cfg, open(path, "w"), indent=2)
"""


def fresh_kubo_repo(repo: Path) -> None:
    """What `ipfs init` leaves behind, as far as the init script cares."""
    repo.mkdir()
    cfg = {
        "Identity": {
            "PeerID": "12D3KooWRandomIdentityMadeUpByIpfsInit1111111111111",
            "PrivKey": "CAESQRandom+Key/From=Init",
        },
        "Bootstrap": [
            "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
        ],
        "Addresses": {
            "API": "/ip4/0.0.0.0/tcp/5001",
            "Gateway": "/ip4/0.0.0.0/tcp/8080",
            "Swarm": ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"],
        },
        "Discovery": {"MDNS": {"Enabled": True}},
        "Routing": {"Type": "auto"},
        "AutoNAT": {},
        "Peering": {"Peers": None},
        "Swarm": {"DisableNatPortMap": False, "Transports": {"Network": {}}},
    }
    (repo / "config").write_text(json.dumps(cfg, indent=2))


def run_init(tmp_path: Path, repo: Path, index: int) -> dict[str, Any]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "ipfs"
    stub.write_text(STUB_IPFS.format(python=sys.executable))
    stub.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "IPFS_PATH": str(repo),
        "KUBO_INDEX": str(index),
        "P2PML_KUBO_DIR": str(KUBO),
        "STUB_LOG": str(tmp_path / "ipfs.log"),
    }
    sh = shutil.which("dash") or "/bin/sh"  # POSIX sh, like the image's busybox
    proc = subprocess.run(
        [sh, str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    cfg: dict[str, Any] = json.loads((repo / "config").read_text())
    return cfg


def test_kubo_init_script_makes_a_private_peered_sidecar(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    fresh_kubo_repo(repo)
    ids = identities()
    cfg = run_init(tmp_path, repo, 2)

    assert cfg["Identity"] == {"PeerID": ids[2][0], "PrivKey": ids[2][1]}
    assert (repo / "swarm.key").read_bytes() == (KUBO / "swarm.key").read_bytes()
    assert stat.S_IMODE((repo / "swarm.key").stat().st_mode) == 0o400
    assert cfg["Bootstrap"] == []
    assert cfg["Discovery"]["MDNS"]["Enabled"] is False
    assert cfg["Routing"]["Type"] == "none"
    assert cfg["AutoNAT"]["ServiceMode"] == "disabled"
    assert cfg["Swarm"]["DisableNatPortMap"] is True
    assert cfg["Swarm"]["RelayClient"]["Enabled"] is False
    assert cfg["Swarm"]["RelayService"]["Enabled"] is False
    assert cfg["Swarm"]["Transports"]["Network"]["QUIC"] is False
    assert cfg["Addresses"]["Swarm"] == ["/ip4/0.0.0.0/tcp/4001"]
    assert cfg["Addresses"]["Gateway"] == []
    # The port every node config names as its sidecar API.
    assert cfg["Addresses"]["API"] == "/ip4/0.0.0.0/tcp/5002"
    swarm_port = tcp_port(cfg["Addresses"]["Swarm"][0])
    assert cfg["Peering"]["Peers"] == [
        {"ID": ids[i][0], "Addrs": [f"/dns4/ipfs{i}/tcp/{swarm_port}"]} for i in (1, 3)
    ]
    assert {f"ipfs{i}" for i in (1, 3)} <= set(kubo_services())


def test_kubo_init_script_is_idempotent_across_restarts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    fresh_kubo_repo(repo)
    first = run_init(tmp_path, repo, 1)
    second = run_init(tmp_path, repo, 1)  # every container start runs it again
    assert first == second
    assert (repo / "swarm.key").read_bytes() == (KUBO / "swarm.key").read_bytes()


def test_kubo_init_script_refuses_an_unknown_index(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    fresh_kubo_repo(repo)
    with pytest.raises(AssertionError, match="no identity for KUBO_INDEX=9"):
        run_init(tmp_path, repo, 9)


# -- the demo script --------------------------------------------------------------------


def test_demo_script_parses_and_matches_the_stack() -> None:
    proc = subprocess.run(["bash", "-n", str(DEMO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(DEMO, os.X_OK)
    text = DEMO.read_text()
    assert "docker/docker-compose.yml" in text
    for name in ("node1", "node2"):
        s = node_settings(name)
        assert str(s.admin.token_file) in text  # read from the data volume
        host_port = services()[name]["ports"][0].split(":")[1]
        assert f"http://127.0.0.1:{host_port}" in text
    assert "/datasets" in text and "/tasks" in text
