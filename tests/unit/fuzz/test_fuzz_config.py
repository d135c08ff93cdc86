"""Fuzz the config loader: any file and environment give Settings or ConfigError.

The documented contract (p2pml/config.py): every problem raises ConfigError
with one line naming the file, the key and what is wrong. Files are built
from the real section and key names with values of any TOML type, plus raw
mutations of a valid file; the environment uses P2PML_<SECTION>_<KEY>.
"""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from p2pml.config import Settings, _hints, load_settings
from p2pml.errors import ConfigError
from tests.unit.fuzz.fuzzing import fuzz, mutated

SECTIONS = {name: sorted(_hints(tp)) for name, tp in typing.get_type_hints(Settings).items()}
KEYS = [(s, k) for s, keys in SECTIONS.items() for k in keys]

# Values that mean something somewhere in the schema, and then anything.
interesting = st.sampled_from(
    [
        "regtest",
        "main",
        "embedded",
        "sidecar",
        "DEBUG",
        "/ip4/127.0.0.1/tcp/0",
        "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWA",
        "127.0.0.1:8080",
        "h:" + "9" * 5000,  # a port int() refuses to parse
        "~nosuchuser-p2pml/x",  # a home directory that does not exist
        "~",
        "",
        "ridge",
        "\x00",
    ]
)
toml_scalars = (
    interesting
    | st.text(max_size=12)
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.booleans()
)
toml_values = toml_scalars | st.lists(toml_scalars, max_size=3)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string
    return "[" + ", ".join(_toml(x) for x in v) + "]"


@st.composite
def config_files(draw: st.DrawFn) -> str:
    lines = []
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "nosuch"]), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        keys = SECTIONS.get(section, [])
        names = st.text("abcdefgh_", min_size=1, max_size=8)
        if keys:
            names = st.sampled_from(keys) | names
        for key in draw(st.lists(names, max_size=4, unique=True)):
            lines.append(f"{key} = {_toml(draw(toml_values))}")
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 4)) == 0:
        text = draw(mutated(text.encode())).decode("utf-8", "replace")
    return text


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    env = {}
    for section, key in draw(st.lists(st.sampled_from(KEYS), max_size=3)):
        value = draw(interesting | st.text(max_size=10) | st.integers().map(str))
        env[f"P2PML_{section.upper()}_{key.upper()}"] = value
    if draw(st.booleans()):
        env[draw(st.text("P2ML_ABCDEZ", min_size=1, max_size=14))] = draw(st.text(max_size=5))
    return env


def _load(tmp: Path, text: str, env: dict[str, str]) -> None:
    path = tmp / "p2pml.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_settings(path, env)
    except ConfigError as err:
        assert "\n" not in str(err), str(err)


@example(text='[admin]\nlisten = "h:' + "9" * 5000 + '"\n', env={})
@example(text='[node]\ndata_dir = "~nosuchuser-p2pml/x"\n', env={})
@example(text="", env={"P2PML_LOG_FILE": "~nosuchuser-p2pml/log"})
@fuzz()
@given(text=config_files(), env=environments())
def test_config_loader_raises_only_config_error(
    tmp_path_factory: Any, text: str, env: dict[str, str]
) -> None:
    _load(tmp_path_factory.mktemp("cfg"), text, env)


@fuzz(0.5)
@given(raw=st.binary(max_size=200))
def test_random_bytes_as_config_file(tmp_path_factory: Any, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "p2pml.toml"
    path.write_bytes(raw)
    try:
        load_settings(path, {})
    except ConfigError:
        pass
