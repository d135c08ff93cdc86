"""One frozen ``Settings`` object, loaded from a TOML file.

Each ``[section]`` of the file maps to one frozen dataclass below; every key
has a default here, so an example config only needs what differs. The loader
(:func:`load_settings`) refuses unknown keys and wrong types with one line
naming the file, the key and the problem, and applies environment overrides
``P2PML_<SECTION>_<KEY>`` on top of the file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pml.errors import ConfigError


@dataclass(frozen=True)
class NodeSettings:
    network: str = "regtest"
    data_dir: Path = Path("./data")
    key_file: Path | None = None  # default: <data_dir>/node.key
    # devnet/regtest only: use well-known funded key N instead of key_file.
    dev_key: int = -1
    # Added to the system clock; for clock-skew tests, never for real use.
    clock_offset_seconds: int = 0
    # False: a follower. It takes results in blocks on the chain's work
    # without re-running them, relays no results and trains none; for a node
    # whose scikit-learn/numpy differ from the network's (p2pml/node/runtime.py).
    validate_results: bool = True
    # When this node's key is drawn into a result's audit committee: re-train
    # the result and publish an attestation (docs/consensus.md "Audit
    # committees"). A follower never attests.
    attest: bool = True
    # Regtest only, for tests: replace the network's runtime parameter
    # ("scikit-learn==1.9.1", ...), e.g. to start a node that does not match.
    regtest_runtime: tuple[str, ...] = ()


@dataclass(frozen=True)
class P2PSettings:
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    max_peers: int = 32
    ban_seconds: int = 86_400
    heartbeat_seconds: float = 1.0


@dataclass(frozen=True)
class IpfsSettings:
    mode: str = "embedded"  # "embedded" | "sidecar"
    api: str = "/ip4/127.0.0.1/tcp/5001"  # sidecar RPC API multiaddr
    swarm: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)  # embedded swarm listen
    peers: tuple[str, ...] = ()  # embedded: swarm peers to connect to
    dev_identity: int = -1  # embedded, devnet/regtest: well-known IPFS key N (-1: random)
    cache_dir: Path | None = None  # default: <data_dir>/cache
    cache_max_bytes: int = 2 * 1024**3
    timeout: float = 60.0
    max_dataset_bytes: int = 512 * 1024**2
    storage_max_mb: int = 10_000  # embedded Kubo repo cap, 10^6 bytes (Kubo's "MB")
    # A fetch whose first block has not arrived by then is given up (no
    # provider): a CID nobody has costs this, not ``timeout``.
    fetch_start_timeout: float = 10.0
    unfetchable_ttl: float = 60.0  # a CID that failed is refused at once meanwhile
    pin_retention_blocks: int = 100  # a task's data stays pinned this long after its payout


@dataclass(frozen=True)
class MiningSettings:
    enabled: bool = False
    workers: int = 1
    nonce_range: int = 50_000


#: An idle training worker maps ~350 MiB of address space (see docs/tasks.md).
MIN_WORKER_MEMORY_MB = 1024


@dataclass(frozen=True)
class TrainingSettings:
    enabled: bool = False
    workers: int = 1
    max_job_seconds: float = 600.0
    max_concurrent_jobs: int = 1
    allowed_models: tuple[str, ...] = ()  # empty: every allowlisted estimator
    max_dataset_bytes: int = 512 * 1024**2
    max_queued_rounds: int = 64  # rounds waiting or running on this node
    max_rounds_per_publisher: int = 16  # of those, from one task publisher
    # Address-space limit of each training/verification/mining worker process.
    worker_memory_mb: int = 2048
    # Byte limit of the parsed-dataset cache (<data_dir>/parsed), LRU eviction.
    parsed_cache_max_bytes: int = 2 * 1024**3
    # Where jobs run: "local" (this node's worker processes) or "dask" (a
    # dask.distributed cluster; see docs/dask.md). With "dask" the local
    # workers still take jobs while the cluster is unreachable.
    executor: str = "local"
    dask_scheduler: str = "tcp://127.0.0.1:8786"
    # TLS to the scheduler (distributed.Security): PEM files, all three or
    # none ("" = unset; paths as given, relative to the working directory).
    dask_tls_ca_file: str = ""
    dask_tls_client_cert: str = ""
    dask_tls_client_key: str = ""
    # Bond this node's key (the network's minimum bond) as soon as training
    # is enabled and the key has the coins: results count only from bonded
    # keys (docs/consensus.md "Bonds").
    auto_bond: bool = True


@dataclass(frozen=True)
class VerificationSettings:
    # Watchtower: fully audit the current winners of every open task (and of
    # closed ones still in their payout window) and challenge any that fails
    # (docs/consensus.md "Disputes"). A wrong challenge cannot happen on the
    # same runtime (audits are deterministic), but each audit is a re-training.
    challenge_bad: bool = False


#: ``[federated.private]``: NAME -> local CSV file, as (name, path) pairs sorted by name.
PrivateFiles = tuple[tuple[str, Path], ...]


@dataclass(frozen=True)
class FederatedSettings:
    # ``[federated.private] digits = "/data/digits.csv"``: this node takes part
    # in private federated tasks naming "digits" by training on that file. The
    # file never leaves the node (not added to IPFS, never sent); only model
    # updates do (docs/federated.md §11.8).
    private: PrivateFiles = ()

    def private_file(self, name: str) -> Path | None:
        return dict(self.private).get(name)


@dataclass(frozen=True)
class AdminSettings:
    listen: str = "127.0.0.1:8080"
    token_file: Path | None = None  # default: <data_dir>/admin.token
    max_body_bytes: int = 1024 * 1024
    # Host names (besides loopback and the listen address) the API answers to.
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogSettings:
    file: Path | None = None  # default: <data_dir>/blockchain.log
    level: str = "INFO"
    json: bool = False


@dataclass(frozen=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    p2p: P2PSettings = field(default_factory=P2PSettings)
    ipfs: IpfsSettings = field(default_factory=IpfsSettings)
    mining: MiningSettings = field(default_factory=MiningSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    verification: VerificationSettings = field(default_factory=VerificationSettings)
    federated: FederatedSettings = field(default_factory=FederatedSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    log: LogSettings = field(default_factory=LogSettings)


# -- loading ---------------------------------------------------------------

ENV_PREFIX = "P2PML_"
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _sections() -> dict[str, type]:
    return {name: hint for name, hint in _hints(Settings).items()}


def _describe(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is Path:
        return "a path"
    if tp == PrivateFiles:
        return 'a table of NAME = "path to a CSV file"'
    if typing.get_origin(tp) is tuple:
        return "a list of strings"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    return str(tp)


def _convert(value: Any, tp: Any, base: Path, from_env: bool) -> Any:
    """Check ``value`` against the field type; env strings are parsed first."""
    if tp == PrivateFiles:
        # A TOML table of NAME = "path" (not settable from the environment).
        if type(value) is not dict or not all(type(v) is str and v for v in value.values()):
            raise ValueError
        return tuple(sorted((k, _convert(v, Path, base, False)) for k, v in value.items()))
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, inner, base, from_env)
    if from_env and isinstance(value, str):
        if tp is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(value)
        if tp is float:
            return float(value)
        if origin is tuple:
            return tuple(v.strip() for v in value.split(",") if v.strip())
    if tp is bool:
        if type(value) is not bool:
            raise ValueError
        return value
    if tp is int:
        if type(value) is not int:
            raise ValueError
        return value
    if tp is float:
        if type(value) not in (int, float):
            raise ValueError
        return float(value)
    if tp is str:
        if type(value) is not str:
            raise ValueError
        return value
    if tp is Path:
        if type(value) is not str or not value:
            raise ValueError
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # "~user" whose home directory cannot be found
            raise ValueError from None
        return p if p.is_absolute() else base / p
    if origin is tuple:
        if type(value) is not list or not all(type(v) is str for v in value):
            raise ValueError
        return tuple(value)
    raise ValueError


def check_multiaddr(text: str) -> str | None:
    from multiaddr import Multiaddr

    try:
        Multiaddr(text)
    except Exception as exc:  # the multiaddr package raises several types
        return f"not a valid multiaddr ({str(exc).splitlines()[0]})"
    return None


def _validate(s: Settings) -> list[tuple[str, str, str]]:
    """Cross-field checks; returns (section, key, problem) triples."""
    from p2pml.chain.fedspec import PRIVATE_NAME
    from p2pml.chain.params import NETWORKS

    bad: list[tuple[str, str, str]] = []
    for name, file in s.federated.private:
        if not PRIVATE_NAME.fullmatch(name):
            bad.append(("federated", f"private.{name}", "names are 1..64 of A-Z a-z 0-9 _ . -"))
        elif not file.is_file():
            bad.append(("federated", f"private.{name}", f"{str(file)!r}: no such file"))
    if s.node.network not in NETWORKS:
        bad.append(
            (
                "node",
                "network",
                f"unknown network {s.node.network!r} (known: {', '.join(NETWORKS)})",
            )
        )
    for key, addrs in (
        ("listen", s.p2p.listen),
        ("bootstrap", s.p2p.bootstrap),
    ):
        for a in addrs:
            problem = check_multiaddr(a)
            if problem:
                bad.append(("p2p", key, f"{a!r}: {problem}"))
    for a in s.p2p.bootstrap:
        if "/p2p/" not in a:
            bad.append(("p2p", "bootstrap", f"{a!r}: must end in /p2p/<peer id>"))
    for key, addrs in (("api", (s.ipfs.api,)), ("swarm", s.ipfs.swarm), ("peers", s.ipfs.peers)):
        for a in addrs:
            problem = check_multiaddr(a)
            if problem:
                bad.append(("ipfs", key, f"{a!r}: {problem}"))
    if s.node.dev_key >= 0 and s.node.network == "main":
        bad.append(("node", "dev_key", "well-known dev keys are for devnet and regtest only"))
    from p2pml.chain.params import DEV_KEYS

    if s.node.regtest_runtime and s.node.network != "regtest":
        bad.append(("node", "regtest_runtime", "only on regtest: elsewhere it is the network's"))
    for pin in s.node.regtest_runtime:
        name, sep, version = pin.partition("==")
        if not sep or not name or not version:
            bad.append(("node", "regtest_runtime", f"{pin!r}: expected NAME==VERSION"))
    if not s.node.validate_results and s.training.enabled:
        bad.append(
            (
                "training",
                "enabled",
                "a follower (validate_results = false) does not judge results, so it trains none",
            )
        )
    if s.node.dev_key >= DEV_KEYS:
        bad.append(("node", "dev_key", f"{s.node.dev_key}: there are {DEV_KEYS} dev keys (0..)"))
    from p2pml.chain.allowlist import ESTIMATORS

    for model in s.training.allowed_models:
        if model not in ESTIMATORS:
            bad.append(("training", "allowed_models", f"{model!r} is not an allowlisted estimator"))
    if s.ipfs.dev_identity >= 0 and s.node.network == "main":
        bad.append(("ipfs", "dev_identity", "well-known IPFS keys are for devnet and regtest only"))
    if s.ipfs.dev_identity >= DEV_KEYS:
        bad.append(("ipfs", "dev_identity", f"{s.ipfs.dev_identity}: there are {DEV_KEYS} (0..)"))
    if s.ipfs.dev_identity >= 0 and s.ipfs.mode != "embedded":
        bad.append(("ipfs", "dev_identity", 'only for mode = "embedded"'))
    if s.ipfs.mode not in ("embedded", "sidecar"):
        bad.append(("ipfs", "mode", f"{s.ipfs.mode!r}: must be 'embedded' or 'sidecar'"))
    bad.extend(_validate_executor(s.training))
    host, _, port = s.admin.listen.rpartition(":")
    # At most 5 digits: int() refuses strings over 4,300 digits with a ValueError.
    if not host or not (port.isascii() and port.isdigit() and len(port) <= 5) or int(port) > 65535:
        bad.append(("admin", "listen", f"{s.admin.listen!r}: expected HOST:PORT"))
    if logging.getLevelName(s.log.level.upper()) not in (10, 20, 30, 40, 50):
        bad.append(("log", "level", f"{s.log.level!r}: expected DEBUG, INFO, WARNING or ERROR"))
    for section, key, value in (
        ("p2p", "max_peers", s.p2p.max_peers),
        ("mining", "workers", s.mining.workers),
        ("mining", "nonce_range", s.mining.nonce_range),
        ("training", "workers", s.training.workers),
        ("training", "max_concurrent_jobs", s.training.max_concurrent_jobs),
        ("training", "max_queued_rounds", s.training.max_queued_rounds),
        ("training", "max_rounds_per_publisher", s.training.max_rounds_per_publisher),
        ("training", "parsed_cache_max_bytes", s.training.parsed_cache_max_bytes),
        ("ipfs", "storage_max_mb", s.ipfs.storage_max_mb),
        ("ipfs", "pin_retention_blocks", s.ipfs.pin_retention_blocks),
    ):
        if value < 1:
            bad.append((section, key, f"{value}: must be at least 1"))
    if s.training.worker_memory_mb < MIN_WORKER_MEMORY_MB:
        bad.append(
            (
                "training",
                "worker_memory_mb",
                f"{s.training.worker_memory_mb}: must be at least {MIN_WORKER_MEMORY_MB} "
                "(an idle worker maps more)",
            )
        )
    for section, key, fvalue in (
        ("ipfs", "timeout", s.ipfs.timeout),
        ("ipfs", "fetch_start_timeout", s.ipfs.fetch_start_timeout),
        ("ipfs", "unfetchable_ttl", s.ipfs.unfetchable_ttl),
        ("training", "max_job_seconds", s.training.max_job_seconds),
        ("p2p", "heartbeat_seconds", s.p2p.heartbeat_seconds),
    ):
        if not fvalue > 0:
            bad.append((section, key, f"{fvalue}: must be positive"))
    return bad


DASK_SCHEMES = ("tcp", "tls")


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except OSError:  # a name too long for the file system (Python 3.11 raises)
        return False


def _validate_executor(t: TrainingSettings) -> list[tuple[str, str, str]]:
    if t.executor not in ("local", "dask"):
        return [("training", "executor", f"{t.executor!r}: must be 'local' or 'dask'")]
    bad: list[tuple[str, str, str]] = []
    scheme, sep, rest = t.dask_scheduler.partition("://")
    host, _, port = rest.rpartition(":")
    if (
        not sep
        or scheme not in DASK_SCHEMES
        or not host
        or not (port.isascii() and port.isdigit() and len(port) <= 5)
        or int(port) > 65535
    ):
        bad.append(
            (
                "training",
                "dask_scheduler",
                f"{t.dask_scheduler!r}: expected tcp://HOST:PORT or tls://HOST:PORT",
            )
        )
    tls = {
        "dask_tls_ca_file": t.dask_tls_ca_file,
        "dask_tls_client_cert": t.dask_tls_client_cert,
        "dask_tls_client_key": t.dask_tls_client_key,
    }
    given = [k for k, v in tls.items() if v]
    if given and len(given) != len(tls):
        missing = next(k for k in tls if k not in given)
        bad.append(("training", missing, "the Dask TLS options go together: set all three"))
    for key, value in tls.items():
        if value and not _is_file(value):
            bad.append(("training", key, f"{value!r}: no such file"))
    if scheme == "tls" and not given:
        bad.append(("training", "dask_tls_ca_file", "a tls:// scheduler needs the TLS options"))
    if t.executor == "dask":
        import importlib.util

        if importlib.util.find_spec("distributed") is None:
            bad.append(
                (
                    "training",
                    "executor",
                    "'dask' needs the distributed package (pip install 'p2pml[dask]')",
                )
            )
    return bad


def load_settings(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (TOML; None = defaults only) plus ``P2PML_<SECTION>_<KEY>``.

    Every problem raises :class:`ConfigError` whose message is one line naming
    the file, the key and what is wrong.
    """
    env = os.environ if env is None else env
    where = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        base = path.resolve().parent
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{where}: config file not found") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read config file: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # TOML is UTF-8
            raise ConfigError(f"{where}: invalid TOML: {exc}") from None

    sections = _sections()
    values: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for name, body in raw.items():
        if name not in sections:
            raise ConfigError(f"{where}: unknown section [{name}] (known: {', '.join(sections)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: {name} must be a [section]")
        hints = _hints(sections[name])
        for key, value in body.items():
            if key not in hints:
                raise ConfigError(f"{where}: [{name}] unknown key {key!r}")
            try:
                values[name][key] = _convert(value, hints[key], base, from_env=False)
            except ValueError:
                raise ConfigError(
                    f"{where}: [{name}] {key}: expected {_describe(hints[key])}, got {value!r}"
                ) from None

    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var in ("P2PML_API", "P2PML_TIMEOUT_FACTOR"):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in sections:
            continue  # other P2PML_* variables belong to tools, not the node
        hints = _hints(sections[section])
        if key not in hints:
            raise ConfigError(f"{where}: environment {var}: [{section}] has no key {key!r}")
        try:
            values[section][key] = _convert(text, hints[key], Path.cwd(), from_env=True)
        except ValueError:
            raise ConfigError(
                f"{where}: environment {var}: expected {_describe(hints[key])}, got {text!r}"
            ) from None

    try:
        settings = Settings(**{n: sections[n](**values[n]) for n in sections})
    except TypeError as exc:  # pragma: no cover - guarded by the key checks above
        raise ConfigError(f"{where}: {exc}") from None
    problems = _validate(settings)
    if problems:
        section, key, problem = problems[0]
        raise ConfigError(f"{where}: [{section}] {key}: {problem}")
    return _with_defaults(settings)


def _with_defaults(s: Settings) -> Settings:
    """Fill the paths that default to places inside the data dir."""
    d = s.node.data_dir
    return dataclasses.replace(
        s,
        node=dataclasses.replace(s.node, key_file=s.node.key_file or d / "node.key"),
        ipfs=dataclasses.replace(s.ipfs, cache_dir=s.ipfs.cache_dir or d / "cache"),
        admin=dataclasses.replace(s.admin, token_file=s.admin.token_file or d / "admin.token"),
        log=dataclasses.replace(s.log, file=s.log.file or d / "blockchain.log"),
    )
