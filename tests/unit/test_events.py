import dataclasses

import pytest

from netmon import events
from netmon.events import make_event as Event


def test_event_size_matches_the_c_struct():
    # struct nm_event in bpf/xdp_monitor.h: 8+4+4+16+16+2*3+6+4 padding.
    assert events.EVENT_SIZE == 64


@pytest.mark.parametrize("ev", [
    Event(1, 2, 1248, 4, 6, "192.168.1.100", "93.184.216.34", 54321, 443, tcp_flags=0x18),
    Event(5, 3, 64, 4, 17, "192.168.1.100", "8.8.8.8", 54321, 53, vlan=100),
    Event(9, 1, 84, 4, 1, "192.168.1.100", "192.168.1.1", icmp_type=8, icmp_code=0),
    Event(9, 1, 86, 6, 6, "2001:db8::1", "2001:db8::2", 443, 51000),
    Event(9, 1, 60, 4, 47, "10.0.0.1", "10.0.0.2", fragment=True),
])
def test_decode_inverts_encode(ev):
    assert events.Decoder().decode(events.encode(ev)) == [ev]


def test_records_framed_by_perf_headers():
    evs = [Event(i, 2, 98, 4, 1, "10.0.0.1", "10.0.0.2", icmp_type=0, icmp_code=0)
           for i in range(3)]
    buf = b"".join(b"H" * 12 + events.encode(ev) + b"\xff" * 4 for ev in evs)
    assert events.Decoder().decode(buf, head=12, tail=4) == evs


def test_flows_are_decoded_once_and_shared():
    a = events.encode(Event(1, 2, 60, 4, 17, "1.2.3.4", "5.6.7.8", 1, 2))
    b = events.encode(Event(2, 2, 70, 4, 17, "1.2.3.4", "5.6.7.8", 1, 2))
    first, second = events.Decoder().decode(a + b)
    assert first.flow is second.flow
    assert first.flow == events.Flow(4, 17, "1.2.3.4", "5.6.7.8", 1, 2)
    assert (first.length, second.length, second.ts_ns) == (60, 70, 2)


def test_unknown_family_records_are_counted_and_dropped():
    good = events.encode(Event(1, 2, 3, 4, 17, "1.2.3.4", "5.6.7.8", 1, 2))
    bad_family = bytearray(good)
    bad_family[54] = 5  # family byte
    decoder = events.Decoder()
    assert decoder.decode(good + bytes(bad_family) + good) == [decoder.decode(good)[0]] * 2
    assert decoder.undecodable == 1


def test_events_are_immutable():
    ev = Event(1, 2, 3, 4, 17, "1.2.3.4", "5.6.7.8", 1, 2)
    with pytest.raises(AttributeError):
        ev.length = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.flow.src = "9.9.9.9"
    assert (ev.src, ev.sport, ev.dport, ev.ipproto) == ("1.2.3.4", 1, 2, 17)
