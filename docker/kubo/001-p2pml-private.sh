#!/bin/sh
# Kubo sidecar setup for the p2pml docker devnet.
#
# ipfs/kubo runs every /container-init.d/*.sh before each daemon start, as the
# ipfs user, once the repo exists (the daemon is not running yet). This makes
# the sidecar a member of a private three-node IPFS network that never talks
# to the public one: fixed identity, swarm key, no bootstrap, no mDNS, no
# routing, no AutoNAT/NAT mapping/relay, and peering with the other sidecars.
# Needs KUBO_INDEX (1..3) and this directory mounted at /p2pml; compose also
# sets LIBP2P_FORCE_PNET=1 so the daemon refuses to start without the key.
set -eu

kubo_dir=${P2PML_KUBO_DIR:-/p2pml}
repo=${IPFS_PATH:-/data/ipfs}
index=${KUBO_INDEX:?KUBO_INDEX must name this sidecar (1..3)}

# 1. Fixed identity, so that each sidecar can list the others in Peering.Peers.
#    `ipfs config` refuses to touch the private key, so edit the file itself.
peer_id=$(awk -v i="$index" '$1 == i { print $2 }' "$kubo_dir/identities")
priv_key=$(awk -v i="$index" '$1 == i { print $3 }' "$kubo_dir/identities")
[ -n "$peer_id" ] && [ -n "$priv_key" ] || {
    echo "p2pml: no identity for KUBO_INDEX=$index in $kubo_dir/identities" >&2
    false
}
if [ "$(ipfs config Identity.PeerID)" != "$peer_id" ]; then
    sed -i \
        -e "s|\"PeerID\": *\"[^\"]*\"|\"PeerID\": \"$peer_id\"|" \
        -e "s|\"PrivKey\": *\"[^\"]*\"|\"PrivKey\": \"$priv_key\"|" \
        "$repo/config"
    [ "$(ipfs config Identity.PeerID)" = "$peer_id" ] || {
        echo "p2pml: could not set the Kubo identity" >&2
        false
    }
fi

# 2. Private network: only daemons holding this swarm key can connect.
if ! cmp -s "$kubo_dir/swarm.key" "$repo/swarm.key"; then
    rm -f "$repo/swarm.key"
    cp "$kubo_dir/swarm.key" "$repo/swarm.key"
    chmod 0400 "$repo/swarm.key"
fi

# 3. Nothing that reaches for the public network.
ipfs bootstrap rm --all >/dev/null
ipfs config --json Bootstrap '[]'
ipfs config --json Discovery.MDNS.Enabled false
ipfs config Routing.Type none
ipfs config AutoNAT.ServiceMode disabled
ipfs config --json Swarm.DisableNatPortMap true
ipfs config --json Swarm.RelayClient.Enabled false
ipfs config --json Swarm.RelayService.Enabled false
ipfs config --json Swarm.Transports.Network.Relay false
ipfs config --json Swarm.EnableHolePunching false
# Private networks work over TCP only (QUIC, WebTransport, WebRTC do not take a PSK).
ipfs config --json Swarm.Transports.Network.QUIC false
ipfs config --json Swarm.Transports.Network.WebTransport false
ipfs config --json Swarm.Transports.Network.WebRTCDirect false
ipfs config --json Addresses.Swarm '["/ip4/0.0.0.0/tcp/4001"]'
ipfs config --json Addresses.Announce '[]'
ipfs config --json Addresses.AppendAnnounce '[]'

# 4. RPC API on 5002 (what the node configs name), no HTTP gateway.
ipfs config Addresses.API /ip4/0.0.0.0/tcp/5002
ipfs config --json Addresses.Gateway '[]'

# 5. Stay connected to the other sidecars (bitswap asks connected peers only,
#    since there is no routing).
peers=$(awk -v i="$index" '
    $1 ~ /^[0-9]+$/ && $1 != i {
        printf "%s{\"ID\": \"%s\", \"Addrs\": [\"/dns4/ipfs%s/tcp/4001\"]}", sep, $2, $1
        sep = ", "
    }' "$kubo_dir/identities")
ipfs config --json Peering.Peers "[$peers]"
echo "p2pml: Kubo sidecar $index ($peer_id) configured for the private devnet"
