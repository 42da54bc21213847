import dataclasses

import pytest

from netmon import events
from netmon.events import Event


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
    assert events.decode(events.encode(ev)) == ev


def test_perf_padding_after_the_record_is_ignored():
    ev = Event(1, 2, 98, 4, 1, "10.0.0.1", "10.0.0.2", icmp_type=0, icmp_code=0)
    assert events.decode(events.encode(ev) + b"\xff\xff\xff\xff") == ev


def test_short_and_unknown_family_records_are_dropped():
    good = events.encode(Event(1, 2, 3, 4, 17, "1.2.3.4", "5.6.7.8", 1, 2))
    bad_family = bytearray(good)
    bad_family[54] = 5  # family byte
    assert events.decode(good[:-1]) is None
    assert events.decode(bytes(bad_family)) is None
    assert len(events.decode_batch([good, good[:10], bytes(bad_family)])) == 1


def test_events_are_immutable():
    ev = Event(1, 2, 3, 4, 17, "1.2.3.4", "5.6.7.8", 1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.length = 5
