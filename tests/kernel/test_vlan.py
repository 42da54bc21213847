"""One frame, one answer, at every hook (issue 18, item 1): VLAN tags on the wire and in
the skb's metadata.

At XDP a tagged frame holds its tags. At tc the kernel has taken the outer one out of
the bytes into the skb's metadata: always at ingress, and at egress where a bridge or a
VLAN device leaves it there for the driver. netmon reads the frame as it was on the wire
at every hook: the same ``vlan``, ``len``, ``--vlan`` filter, flow key and captured bytes.

Real kernel, real frames: tagged frames are built whole and sent from a raw socket (this
kernel has no 8021q module); the egress tag comes from a VLAN-filtering bridge.
"""

from __future__ import annotations

import json
import sys

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

from netmon.kernel import facts
from netmon.pcapng import reader as savefile
from tests.support.netns import ROOT, NetnsPair, send, sh
from tests.support.runner import Netmon

pytestmark = pytest.mark.kernel

PAYLOAD = b"v" * 9


def _frames(n: NetnsPair) -> list[bytes]:
    """Untagged, 802.1Q 200, 802.1Q 100, and QinQ (802.1ad 100 outside, 802.1Q 7 inside)."""
    eth = Ether(src=n.mac(n.a), dst=n.mac(n.b))
    udp = IP(src=n.a_ip, dst=n.b_ip) / UDP(sport=40050, dport=5050) / PAYLOAD
    return [bytes(f) for f in (eth / udp, eth / Dot1Q(vlan=200) / udp,
                               eth / Dot1Q(vlan=100) / udp,
                               eth / Dot1AD(vlan=100) / Dot1Q(vlan=7) / udp)]


def _hook_can_capture(hook: str) -> None:
    if hook == "xdp" and not facts.supports("frags"):
        pytest.skip("XDP copies packets from Linux 5.18 on")


@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_tagged_frames_read_alike_at_every_hook(netns, hook):
    """At tc ingress the outer tag is metadata; netmon still sees it, and the wire length."""
    n = netns
    frames = _frames(n)
    with Netmon(n, "--hook", hook, "--json", "--count", "4") as nm:
        nm.wait_ready()
        for frame in frames:
            send(n, "raw", n.a_if, frame.hex())
        assert nm.wait_exit() == 0
    got = [json.loads(line) for line in nm.out]
    assert [(ev["vlan"], ev["len"], ev["sport"], ev["dport"]) for ev in got] == [
        (None, len(frames[0]), 40050, 5050), (200, len(frames[1]), 40050, 5050),
        (100, len(frames[2]), 40050, 5050), (100, len(frames[3]), 40050, 5050)]


@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_the_vlan_filter_and_flows_see_the_outer_tag(netns, hook):
    n = netns
    frames = _frames(n)
    with Netmon(n, "--hook", hook, "--vlan", "100", "--json", "--count", "2") as nm:
        nm.wait_ready()
        for frame in frames:
            send(n, "raw", n.a_if, frame.hex())
        assert nm.wait_exit() == 0
    assert [json.loads(line)["len"] for line in nm.out] == [len(frames[2]), len(frames[3])]
    with Netmon(n, "--hook", hook, "--flows", "--json", "--flow-idle", "1") as nm:
        nm.wait_ready()
        for frame in frames:
            send(n, "raw", n.a_if, frame.hex())
        nm.wait_lines(3)
    records = [json.loads(line) for line in nm.out]
    # IP bytes, the tags not counted: the same for each of the three flows.
    ip_len = len(frames[0]) - 14
    assert sorted((r.get("vlanId", 0), r["packetDeltaCount"], r["octetDeltaCount"])
                  for r in records) == sorted([(0, 1, ip_len), (200, 1, ip_len),
                                               (100, 2, 2 * ip_len)])


@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_a_capture_holds_the_frames_as_sent(netns, tmp_path, hook):
    """At tc the tag is put back where the kernel took it from, as libpcap does."""
    _hook_can_capture(hook)
    n = netns
    frames = _frames(n)
    path = tmp_path / "tags.pcapng"
    with Netmon(n, "--hook", hook, "-w", str(path), "--count", "4") as nm:
        nm.wait_ready()
        for frame in frames:
            send(n, "raw", n.a_if, frame.hex())
        assert nm.wait_exit() == 0
    got = list(savefile.frames(path))
    assert [(f.data, f.origlen) for f in got] == [(f, len(f)) for f in frames]
    # A snaplen that ends inside the tag keeps the tag's first bytes, as on the wire.
    path = tmp_path / "short.pcapng"
    with Netmon(n, "--hook", hook, "-w", str(path), "-s", "14", "--count", "1") as nm:
        nm.wait_ready()
        send(n, "raw", n.a_if, frames[1].hex())
        assert nm.wait_exit() == 0
    (short,) = savefile.frames(path)
    assert (short.data, short.origlen) == (frames[1][:14], len(frames[1]))


@pytest.fixture
def bridged(netns):
    """b's veth a port of a bridge with vx1, the far end of vx0. A tagged frame sent out
    of vx0 arrives at vx1, where the kernel takes its tag into the skb's metadata; the
    bridge forwards the skb as it is, out of b's veth, the tag still in the metadata."""
    n = netns
    ns = ["ip", "-n", n.b]
    sh(*ns, "link", "add", "br0", "type", "bridge")
    sh(*ns, "link", "add", "vx0", "type", "veth", "peer", "name", "vx1")
    sh(*ns, "link", "set", "vx1", "master", "br0")
    sh(*ns, "link", "set", n.b_if, "master", "br0")
    for dev in ("br0", "vx0", "vx1"):
        sh(*ns, "link", "set", dev, "up")
    return n


@pytest.mark.parametrize("mode", ["json", "capture"])
def test_a_tag_the_bridge_leaves_in_metadata_at_egress(bridged, tmp_path, mode):
    n = bridged
    eth = Ether(src="02:00:00:00:00:20", dst=n.mac(n.a))
    on_wire = bytes(eth / Dot1Q(vlan=20) / IP(src=n.b_ip, dst=n.a_ip) /
                    UDP(sport=5050, dport=40050) / PAYLOAD)
    path = tmp_path / "out.pcapng"
    args = ["--json"] if mode == "json" else ["-w", str(path)]
    with Netmon(n, "--hook", "tc", "-Q", "out", "--protocol", "udp", *args, "--count", "1") as nm:
        nm.wait_ready()
        n.run(n.b, sys.executable, "-m", "tests.support.traffic", "raw", "vx0", on_wire.hex(), cwd=ROOT)
        assert nm.wait_exit() == 0
    if mode == "json":
        (ev,) = [json.loads(line) for line in nm.out]
        assert (ev["dir"], ev["vlan"], ev["len"], ev["dport"]) == ("out", 20, len(on_wire),
                                                                   40050)
    else:
        (got,) = savefile.frames(path)
        assert (got.data, got.origlen, got.outbound) == (on_wire, len(on_wire), True)
