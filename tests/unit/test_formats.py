import json

from netmon.sinks import formats
from netmon.events import make_event as Event


TEXT = formats.TextFormat()


def test_text_lines_are_the_original_tools():
    cases = [
        (Event(0, 1, 1248, 4, 6, "192.168.1.100", "93.184.216.34", 54321, 443),
         "TCP 192.168.1.100:54321 -> 93.184.216.34:443 (1248b)"),
        (Event(0, 1, 64, 4, 17, "192.168.1.100", "8.8.8.8", 54321, 53),
         "UDP 192.168.1.100:54321 -> 8.8.8.8:53 (64b)"),
        (Event(0, 1, 1514, 4, 6, "192.168.1.100", "142.250.185.78", 54322, 80),
         "TCP 192.168.1.100:54322 -> 142.250.185.78:80 (1514b)"),
        (Event(0, 1, 84, 4, 1, "192.168.1.100", "192.168.1.1", icmp_type=8, icmp_code=0),
         "ICMP 192.168.1.100 -> 192.168.1.1 (84b)"),
    ]
    for ev, line in cases:
        assert TEXT.line(ev) == line


def test_other_protocols_and_ipv6():
    assert TEXT.line(Event(0, 1, 86, 6, 6, "2001:db8::1", "2001:db8::2", 443, 51000)) \
        == "TCP [2001:db8::1]:443 -> [2001:db8::2]:51000 (86b)"
    assert TEXT.line(Event(0, 1, 60, 4, 47, "10.0.0.1", "10.0.0.2")) \
        == "GRE 10.0.0.1 -> 10.0.0.2 (60b)"
    assert TEXT.line(Event(0, 1, 60, 4, 253, "10.0.0.1", "10.0.0.2")) \
        == "253 10.0.0.1 -> 10.0.0.2 (60b)"
    # A TCP packet whose header was cut off has no ports to show.
    assert TEXT.line(Event(0, 1, 40, 4, 6, "10.0.0.1", "10.0.0.2")) \
        == "TCP 10.0.0.1 -> 10.0.0.2 (40b)"


def test_json_lines_carry_every_field():
    clock = formats.Clock()
    clock.offset_ns = 1_700_000_000_000_000_000
    fmt = formats.JsonFormat(lambda idx: {3: {"ifname": "veth1"}}[idx], clock).line
    udp = json.loads(fmt(Event(1_500_000_000, 3, 64, 4, 17, "10.0.0.1", "8.8.8.8", 5353, 53)))
    assert udp == {
        "ts": 1700000001.5, "ifname": "veth1", "dir": "in", "proto": "udp", "ipproto": 17,
        "src": "10.0.0.1", "dst": "8.8.8.8", "sport": 5353, "dport": 53, "len": 64,
        "segs": 1, "vlan": None, "icmp_type": None, "icmp_code": None, "tcp_flags": None,
        "frag": False,
    }
    icmp = json.loads(fmt(Event(0, 3, 84, 4, 1, "10.0.0.1", "10.0.0.2", icmp_type=8,
                                icmp_code=0)))
    assert (icmp["sport"], icmp["dport"], icmp["icmp_type"], icmp["proto"]) == (None, None, 8, "icmp")


def test_render_batches_lines():
    evs = [Event(0, 1, 84, 4, 1, "10.0.0.1", "10.0.0.2"), Event(0, 1, 90, 4, 1, "10.0.0.1",
                                                                "10.0.0.2")]
    assert formats.TextFormat().render(evs) == \
        "ICMP 10.0.0.1 -> 10.0.0.2 (84b)\nICMP 10.0.0.1 -> 10.0.0.2 (90b)\n"
    assert formats.TextFormat().render([]) == ""
    json_lines = formats.JsonFormat(lambda idx: {"ifname": str(idx)}).render(evs).splitlines()
    assert [json.loads(line)["len"] for line in json_lines] == [84, 90]


def test_lines_name_interface_and_direction_when_many_are_watched():
    fmt = formats.TextFormat({3: "tap100i0", 4: "veth1"}.get)
    evs = [Event(0, 3, 1514, 4, 6, "10.0.0.5", "10.0.0.9", 443, 51000, dir=1),
           Event(0, 4, 84, 4, 1, "10.0.0.9", "10.0.0.5", dir=0)]
    assert fmt.render(evs) == ("tap100i0 out TCP 10.0.0.5:443 -> 10.0.0.9:51000 (1514b)\n"
                               "veth1 in ICMP 10.0.0.9 -> 10.0.0.5 (84b)\n")
    assert fmt.line(evs[0]) == "tap100i0 out TCP 10.0.0.5:443 -> 10.0.0.9:51000 (1514b)"


def test_json_has_direction_segments_and_guest():
    info = {7: {"ifname": "tap100i0", "guest": 100, "guest_name": "web1"}}
    ev = Event(0, 7, 65226, 4, 6, "10.0.0.5", "10.0.0.9", 443, 51000, dir=1, segs=44)
    got = json.loads(formats.JsonFormat(info.get).line(ev))
    assert (got["ifname"], got["dir"], got["len"], got["segs"], got["guest"],
            got["guest_name"]) == ("tap100i0", "out", 65226, 44, 100, "web1")
