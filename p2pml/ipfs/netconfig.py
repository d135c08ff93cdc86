"""Pure helpers for the network rule: loopback checks and the embedded Kubo config.

Kept free of I/O so the tests can assert on exactly what the backends write.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable
from typing import Any

# Everything in IPv4 except 127.0.0.0/8, as Kubo ``Swarm.AddrFilters`` (deny
# list): even if a peer advertises a public address, we never dial it.
_NON_LOOPBACK_V4 = (
    "0.0.0.0/2",
    "64.0.0.0/3",
    "96.0.0.0/4",
    "112.0.0.0/5",
    "120.0.0.0/6",
    "124.0.0.0/7",
    "126.0.0.0/8",
    "128.0.0.0/1",
)


def multiaddr_host(maddr: str) -> str | None:
    """The IP literal of an ``/ip4/...`` or ``/ip6/...`` multiaddr, else None."""
    parts = maddr.split("/")
    if len(parts) >= 3 and parts[0] == "" and parts[1] in ("ip4", "ip6"):
        return parts[2]
    return None


def is_loopback_multiaddr(maddr: str) -> bool:
    """True only for IP multiaddrs on 127.0.0.0/8 or ::1 (DNS names are not)."""
    host = multiaddr_host(maddr)
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def all_loopback(maddrs: Iterable[str]) -> bool:
    return all(is_loopback_multiaddr(m) for m in maddrs)


def addr_filters(ipv6: bool) -> list[str]:
    """Deny every non-loopback IPv4 range; and all IPv6 unless we listen on ::1."""
    filters = [f"/ip4/{net.replace('/', '/ipcidr/')}" for net in _NON_LOOPBACK_V4]
    return filters if ipv6 else [*filters, "/ip6/::/ipcidr/0"]


GC_WATERMARK_PERCENT = 90


def embedded_kubo_config(
    base: dict[str, Any], swarm: Iterable[str], storage_max_mb: int | None = None
) -> dict[str, Any]:
    """Rewrite a freshly created Kubo repo config so the node never leaves its peers.

    ``storage_max_mb`` goes to ``Datastore.StorageMax`` (Kubo's "MB" is 10^6
    bytes) with ``StorageGCWatermark``: the embedded library never runs Kubo's
    GC, so our own collector (:mod:`p2pml.ipfs.repogc`) enforces them; they are
    written so a Kubo binary run on this repo (``ipfs repo gc``) agrees.

    No bootstrap list, no mDNS, no DHT/routing, no UPnP/NAT-PMP, no AutoNAT,
    no relay, no API/gateway listeners; swarm only on the given addresses. When
    those are all loopback, non-loopback dials are also denied by AddrFilters.
    """
    swarm = list(swarm)
    cfg = copy.deepcopy(base)
    addresses = cfg.setdefault("Addresses", {})
    addresses["Swarm"] = swarm
    addresses["Announce"] = []
    addresses["AppendAnnounce"] = []
    addresses["API"] = []
    addresses["Gateway"] = []
    addresses["Delegates"] = []
    cfg["Bootstrap"] = []
    cfg["Discovery"] = {"MDNS": {"Enabled": False}}
    cfg["Routing"] = {"Type": "none"}
    cfg.setdefault("AutoNAT", {})["ServiceMode"] = "disabled"
    cfg.setdefault("Peering", {})["Peers"] = None
    sw = cfg.setdefault("Swarm", {})
    sw["DisableNatPortMap"] = True
    sw["RelayClient"] = {"Enabled": False}
    sw["RelayService"] = {"Enabled": False}
    sw["EnableHolePunching"] = False
    sw.setdefault("Transports", {}).setdefault("Network", {})["Relay"] = False
    if all_loopback(swarm):
        sw["AddrFilters"] = addr_filters(ipv6=any(m.startswith("/ip6/") for m in swarm))
    cfg.setdefault("Experimental", {})["StrategicProviding"] = True  # no reprovider sweeps
    if storage_max_mb is not None:
        datastore = cfg.setdefault("Datastore", {})
        datastore["StorageMax"] = f"{storage_max_mb}MB"
        datastore["StorageGCWatermark"] = GC_WATERMARK_PERCENT
    return cfg
