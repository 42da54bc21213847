"""How events are shown: the original tool's text line, or JSON lines.

Formatters render a whole batch into one string, so a poll's worth of events
costs one write. A batch holds Events or plain rows of their fields (what the
decoder's hot path yields); both unpack alike. The text formatter keeps each
flow's line prefix, so a repeated flow costs one lookup and the length.

With one interface and one direction, a line is exactly the original tool's; with
more, it starts with the interface and the direction (``tap100i0 out TCP ...``).
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterable

from netmon import protocols, tcphealth
from netmon.events import DIR_NAMES, Event, Flow, Row, decode_flow

_PREFIX_CACHE_MAX = 65536


def _endpoint(addr: str, port: int | None, family: int) -> str:
    if port is None:
        return addr
    if family == 6:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def _prefix(flow: Flow) -> str:
    return (f"{protocols.name(flow.ipproto)} {_endpoint(flow.src, flow.sport, flow.family)}"
            f" -> {_endpoint(flow.dst, flow.dport, flow.family)} (")


class Stamps:
    """tcpdump's -t family, before each line: -tt seconds since the epoch, -ttt the time
    since the line before, -tttt the date and time, -ttttt the time since the first
    line (-t: none, as netmon's default line). Microseconds, as tcpdump prints them."""

    def __init__(self, level: int, clock: "Clock"):
        self._level, self._clock = level, clock
        self._first: int | None = None
        self._last: int | None = None

    def __call__(self, ts_ns: int) -> str:
        t = ts_ns + self._clock.offset_ns  # ns since the epoch, exactly
        if self._level == 2:
            return f"{t // 1_000_000_000}.{t // 1000 % 1_000_000:06d} "
        if self._level == 4:
            day = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t // 1_000_000_000))
            return f"{day}.{t // 1000 % 1_000_000:06d} "
        if self._first is None:
            self._first = self._last = t
        since = t - (self._last if self._level == 3 else self._first)
        self._last = t
        sign, us = ("-" if since < 0 else " "), abs(since) // 1000  # tcpdump's sign column
        return (f"{sign}{us // 3_600_000_000:02d}:{us // 60_000_000 % 60:02d}:"
                f"{us // 1_000_000 % 60:02d}.{us % 1_000_000:06d} ")


def stamps(level: int, clock: "Clock") -> Stamps | None:
    """The -t family's stamper for a run (None: lines without a time)."""
    return Stamps(level, clock) if level >= 2 else None


def with_guest(info: dict) -> str:
    """An interface as a line names it where guests are watched: ``tap100i0 (web1)``
    (its guest's name, where the config gives one)."""
    name = info.get("guest_name")
    return f"{info['ifname']} ({name})" if name else info["ifname"]


class TextFormat:
    """``TCP 192.168.1.100:54321 -> 93.184.216.34:443 (1248b)``

    ``ifnames`` (ifindex -> name) given: ``veth1 in TCP ...``, for runs that watch
    more than one interface or direction. ``labels`` instead: the label of an
    (ifindex, direction), "" for none (-r: a file's interface). ``stamp`` given (-tt
    and on): each line begins with the packet's time as tcpdump's -t options print it.
    """

    def __init__(self, ifnames: Callable[[int], str] | None = None,
                 stamp: Callable[[int], str] | None = None,
                 labels: Callable[[int, int], str] | None = None):
        self._prefixes: dict[bytes, str] = {}  # by the event's raw flow key
        self._ifnames = (lambda i, d: f"{ifnames(i)} {DIR_NAMES[d]}") if ifnames else labels
        self._stamp = stamp
        self._labels: dict[tuple[int, int], str] = {}  # by (ifindex, dir)

    def _label(self, ifindex: int, direction: int) -> str:
        label = self._labels.get((ifindex, direction))
        if label is None:
            text = self._ifnames(ifindex, direction)
            label = self._labels[(ifindex, direction)] = f"{text} " if text else ""
        return label

    def forget(self, ifindex: int) -> None:
        """An interface went away: its index may come back under another name."""
        for key in [k for k in self._labels if k[0] == ifindex]:
            del self._labels[key]

    def _new_prefix(self, key: bytes) -> str:
        if len(self._prefixes) >= _PREFIX_CACHE_MAX:
            self._prefixes.clear()
        text = self._prefixes[key] = _prefix(decode_flow(key))
        return text

    def prefix(self, key: bytes) -> str:
        """``TCP 10.0.0.1:5000 -> 10.0.0.2:80 (``: a line up to its length (kept per key)."""
        return self._prefixes.get(key) or self._new_prefix(key)

    def line(self, ev: Event | Row) -> str:
        ts, ifindex, length, key, direction, _ = ev
        label = self._label(ifindex, direction) if self._ifnames else ""
        stamp = self._stamp(ts) if self._stamp else ""
        return f"{stamp}{label}{self._prefixes.get(key) or self._new_prefix(key)}{length}b)"

    def render(self, events: Iterable[Event | Row], frames: list[int] | None = None) -> str:
        if self._stamp is not None:  # each line its own time: the plain path
            return "".join([self.line(ev) + "\n" for ev in events])
        prefixes = self._prefixes
        new = self._new_prefix
        if self._ifnames is None:
            return "".join([f"{prefixes.get(key) or new(key)}{length}b)\n"
                            for _, _, length, key, _, _ in events])
        labels = self._labels
        label = self._label
        return "".join([f"{labels.get((ifindex, d)) or label(ifindex, d)}"
                        f"{prefixes.get(key) or new(key)}{length}b)\n"
                        for _, ifindex, length, key, d, _ in events])


class Clock:
    """Turns the kernel's CLOCK_MONOTONIC stamps into epoch seconds."""

    def __init__(self, offset_ns: int | None = None):
        """``offset_ns`` given: stamps are that far from the epoch (0: epoch already)."""
        self.offset_ns = time.time_ns() - time.monotonic_ns() if offset_ns is None else offset_ns

    def epoch(self, ts_ns: int) -> float:
        return (ts_ns + self.offset_ns) / 1e9


class JsonFormat:
    """One JSON object per event.

    ``ifinfo`` maps an ifindex to the interface's fields: ``ifname``, and for a
    Proxmox VE guest's interface ``guest`` and ``guest_name``.
    """

    def __init__(self, ifinfo: Callable[[int], dict], clock: Clock | None = None):
        self._ifinfo = ifinfo
        self._clock = clock or Clock()
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def line(self, ev: Event | Row, frame: int | None = None) -> str:
        return self._dumps(self.fields(ev, frame))

    def fields(self, ev: Event | Row, frame: int | None = None) -> dict:
        """The event's object, before it is written."""
        ev = Event(*ev)
        f = ev.flow
        where = {"frame": frame} if frame is not None else {}
        return {
            **where,
            "ts": round(self._clock.epoch(ev.ts_ns), 6),
            **self._ifinfo(ev.ifindex),
            "dir": DIR_NAMES[ev.dir],
            "proto": protocols.name(f.ipproto).lower(),
            "ipproto": f.ipproto,
            "src": f.src,
            "dst": f.dst,
            "sport": f.sport,
            "dport": f.dport,
            "len": ev.length,
            "segs": ev.segs,
            "vlan": f.vlan,
            "icmp_type": f.icmp_type,
            "icmp_code": f.icmp_code,
            "tcp_flags": f.tcp_flags,
            "frag": f.fragment,
        }

    def render(self, events: Iterable[Event | Row], frames: list[int] | None = None) -> str:
        """``frames``: each event's frame number in the capture file it was read from."""
        if frames is None:
            return "".join([self.line(ev) + "\n" for ev in events])
        return "".join([self.line(ev, n) + "\n" for ev, n in zip(events, frames)])


# -- drops (netmon drops) -------------------------------------------------------------

class DropText:
    """``tap100i0 TCP 10.0.0.5:443 -> 10.0.0.9:51000 (60b) drop NETFILTER_DROP nf_hook_slow+0x10a``

    A row is an event's fields, then the drop's location and reason (events.Decoder with
    abi.DROP_TAIL). The reason is left out where the kernel gives none (< 5.17).
    """

    def __init__(self, ifnames: Callable[[int], str | None], reason: Callable[[int], str | None],
                 where: Callable[[int], str], stamp: Callable[[int], str] | None = None):
        self._text = TextFormat()
        self._ifnames, self._reason, self._where = ifnames, reason, where
        self._stamp = stamp

    def line(self, row: Row) -> str:
        location, reason = row[6], row[7]
        why = self._reason(reason)
        return ((self._stamp(row[0]) if self._stamp else "")
                + f"{self._ifnames(row[1]) if row[1] else '-'} {self._text.line(row[:6])} drop "
                + (f"{why} " if why else "") + self._where(location))

    def render(self, rows: Iterable[Row], frames: list[int] | None = None) -> str:
        return "".join([self.line(row) + "\n" for row in rows])


class DropJson:
    """One JSON object per drop: an event's fields (not its direction: a drop has none
    netmon can tell; ``ifname`` null for a drop with no device), ``reason`` (null before
    5.17) and ``location``."""

    def __init__(self, ifinfo: Callable[[int], dict], reason: Callable[[int], str | None],
                 where: Callable[[int], str], clock: Clock | None = None):
        self._json = JsonFormat(ifinfo, clock)
        self._reason, self._where = reason, where
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def line(self, row: Row) -> str:
        fields = self._json.fields(row[:6])
        del fields["dir"], fields["segs"]
        if not row[1]:  # dropped with no device: none to name (the text's "-")
            fields["ifname"] = None
        fields.update(reason=self._reason(row[7]), location=self._where(row[6]))
        return self._dumps(fields)

    def render(self, rows: Iterable[Row], frames: list[int] | None = None) -> str:
        return "".join([self.line(row) + "\n" for row in rows])


# -- TCP health (netmon rtt) ----------------------------------------------------------

class TcpText:
    """``tap100i0 (web1) network TCP 10.0.0.9:51000 -> 10.0.0.1:443 rtt 20.312 ms``: an
    RTT sample, named by what answered it (tcphealth.component), the flow as the packet
    that started it went; ``(handshake)``, ``(echo)`` where it was not timestamps.
    ``tap100i0 (web1) out TCP 10.0.0.1:443 -> 10.0.0.9:51000 (1514b) retransmission seq
    1234``: a data segment the interface had seen (``out of order``: one that filled a
    gap). A row is an event's fields, then rtt_ns, seq and kind (abi.TCP_TAIL)."""

    def __init__(self, ifinfo: Callable[[int], dict], stamp: Callable[[int], str] | None = None):
        self._ifinfo = ifinfo
        self._stamp = stamp
        self._text = TextFormat()

    def line(self, row: Row) -> str:
        rtt, seq, kind = row[6], row[7], row[8]
        info = self._ifinfo(row[1])
        where = with_guest(info)
        stamp = self._stamp(row[0]) if self._stamp else ""
        if kind in tcphealth.RTT_KINDS:
            # The flow without its length (kept per flow: at full rate the same
            # connections' samples come again and again).
            what = self._text.prefix(row[3])[:-2]
            how = "" if kind == tcphealth.TK_RTT_TS else f" ({tcphealth.KIND_NAMES[kind]})"
            comp = tcphealth.component("guest" in info, row[4])
            return f"{stamp}{where} {comp} {what} rtt {tcphealth.ms(rtt)}{how}"
        return (f"{stamp}{where} {DIR_NAMES[row[4]]} {self._text.line(row[:6])} "
                f"{tcphealth.KIND_NAMES.get(kind, kind)} seq {seq}")

    def render(self, rows: Iterable[Row], frames: list[int] | None = None) -> str:
        return "".join([self.line(row) + "\n" for row in rows])


class TcpJson:
    """One JSON object per RTT sample or retransmission: the event's fields (for a sample,
    the packet's that started it), ``event`` (rtt, retransmission, out_of_order); for a
    sample ``component``, ``method`` (timestamp, handshake, echo) and ``rtt_ns``; else
    ``seq``."""

    def __init__(self, ifinfo: Callable[[int], dict], clock: Clock | None = None):
        self._clock = clock or Clock()
        self._json = JsonFormat(ifinfo, self._clock)
        self._ifinfo = ifinfo
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode
        self._flows: dict[bytes, str] = {}  # a flow's fields, encoded (render())

    def line(self, row: Row) -> str:
        """The line as its fields make it (render() makes the samples' faster, alike)."""
        rtt, seq, kind = row[6], row[7], row[8]
        fields = self._json.fields(row[:6])
        if kind in tcphealth.RTT_KINDS:
            del fields["len"], fields["segs"], fields["tcp_flags"]
            fields.update(event="rtt", component=tcphealth.component(
                "guest" in self._ifinfo(row[1]), row[4]),
                method=tcphealth.KIND_NAMES[kind], rtt_ns=rtt)
        else:
            fields.update(event="retransmission" if kind == tcphealth.TK_RETRANS
                          else "out_of_order", seq=seq)
        return self._dumps(fields)

    def _flow(self, key: bytes) -> str:
        """The fields a sample's line takes from its flow, encoded once per flow (at full
        rate the same connections' samples come again and again)."""
        text = self._flows.get(key)
        if text is None:
            if len(self._flows) >= _PREFIX_CACHE_MAX:
                self._flows.clear()
            f = decode_flow(key)
            text = self._flows[key] = self._dumps({
                "proto": protocols.name(f.ipproto).lower(), "ipproto": f.ipproto,
                "src": f.src, "dst": f.dst, "sport": f.sport, "dport": f.dport,
                "vlan": f.vlan, "icmp_type": f.icmp_type, "icmp_code": f.icmp_code,
                "frag": f.fragment})[1:-1]
        return text

    def render(self, rows: Iterable[Row], frames: list[int] | None = None) -> str:
        """Each row's line(), a sample's put together from its parts: the same bytes
        (a test holds them so), ~4 times as fast."""
        out = []
        interfaces: dict[int, tuple[str, bool]] = {}  # this call's: names may change
        epoch, dumps = self._clock.epoch, self._dumps
        for row in rows:
            kind = row[8]
            if kind not in tcphealth.RTT_KINDS:
                out.append(self.line(row) + "\n")
                continue
            where = interfaces.get(row[1])
            if where is None:
                info = self._ifinfo(row[1])
                fields = dumps(info)[1:-1]
                where = interfaces[row[1]] = (fields + "," if fields else "", "guest" in info)
            out.append(
                f'{{"ts":{round(epoch(row[0]), 6)!r},{where[0]}"dir":"{DIR_NAMES[row[4]]}",'
                f'{self._flow(row[3])},"event":"rtt","component":'
                f'"{tcphealth.component(where[1], row[4])}","method":'
                f'"{tcphealth.KIND_NAMES[kind]}","rtt_ns":{row[6]}}}\n')
        return "".join(out)


# -- flow records (netmon --flows) -------------------------------------------------

_TCP_FLAG_LETTERS = "CEUAPRSF"  # bit 7 .. bit 0, as nfdump prints them


def tcp_flags_text(flags: int) -> str:
    """``...AP.SF``: a letter where the flag is set, a dot where not."""
    return "".join(letter if flags & (0x80 >> i) else "."
                   for i, letter in enumerate(_TCP_FLAG_LETTERS))


def flow_endpoints(key) -> str:
    """``10.0.0.1:5000 -> 10.0.0.2:80``; ICMP: ``10.0.0.1 -> 10.0.0.2 type 8 code 0``."""
    if key.icmp:
        return f"{key.src} -> {key.dst} type {key.sport} code {key.dport}"
    if key.ipproto in protocols.WITH_PORTS:
        return (f"{_endpoint(key.src, key.sport, key.family)} -> "
                f"{_endpoint(key.dst, key.dport, key.family)}")
    return f"{key.src} -> {key.dst}"


class FlowRecordText:
    """``05:53:54.123 5.333s veth1 in TCP 10.0.0.1:5000 -> 10.0.0.2:80 12 packets
    14388 bytes ...AP.SF idle``: start (local time), duration, where, what, how much,
    TCP flags, why it ended."""

    def __init__(self, ifname: Callable[[int], str], clock: Clock):
        self._ifname = ifname
        self._clock = clock

    def line(self, rec) -> str:
        from netmon.flows import END_NAMES

        k = rec.key
        start = self._clock.epoch(rec.first_ns)
        stamp = time.strftime("%H:%M:%S", time.localtime(start)) + f".{int(start * 1000) % 1000:03d}"
        flags = f" {tcp_flags_text(rec.tcp_flags)}" if k.ipproto == 6 else ""
        vlan = f" vlan {k.vlan}" if k.vlan else ""
        return (f"{stamp} {(rec.last_ns - rec.first_ns) / 1e9:.3f}s {self._ifname(k.ifindex)} "
                f"{k.direction}{vlan} {protocols.name(k.ipproto)} {flow_endpoints(k)} "
                f"{rec.packets} packets {rec.bytes} bytes{flags} {END_NAMES[rec.reason]}")

    def render(self, records) -> str:
        return "".join(self.line(r) + "\n" for r in records)


class FlowRecordJson:
    """One JSON object per flow record. Field names and meanings are IPFIX's
    information elements (RFC 7012, IANA's registry), so an exporter can send the
    same records unchanged; ``interfaceName`` is IE 82, and netmon adds ``guest``
    and ``guest_name`` for a Proxmox VE guest's interface."""

    def __init__(self, ifinfo: Callable[[int], dict], clock: Clock, tcp: bool = False):
        """``tcp``: TCP health is measured: TCP flows' records carry it."""
        self._ifinfo = ifinfo
        self._clock = clock
        self._tcp = tcp
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def record(self, rec) -> dict:
        k = rec.key
        v = "IPv4" if k.family == 4 else "IPv6"
        info = self._ifinfo(k.ifindex)
        out = {
            "flowStartMilliseconds": int(self._clock.epoch(rec.first_ns) * 1000),
            "flowEndMilliseconds": int(self._clock.epoch(rec.last_ns) * 1000),
            "packetDeltaCount": rec.packets,
            "octetDeltaCount": rec.bytes,
            "protocolIdentifier": k.ipproto,
            f"source{v}Address": k.src,
            f"destination{v}Address": k.dst,
        }
        if k.icmp:
            out[f"icmpTypeCode{v}"] = k.sport << 8 | k.dport
        elif k.ipproto in protocols.WITH_PORTS:
            out["sourceTransportPort"] = k.sport
            out["destinationTransportPort"] = k.dport
        if k.ipproto == 6:
            out["tcpControlBits"] = rec.tcp_flags
        if k.vlan:
            out["vlanId"] = k.vlan
        out["ingressInterface" if k.dir == 0 else "egressInterface"] = k.ifindex
        out["flowDirection"] = k.dir  # 0 ingress, 1 egress
        out["flowEndReason"] = rec.reason
        out["interfaceName"] = info["ifname"]
        out.update((name, info[name]) for name in ("guest", "guest_name") if name in info)
        if k.ipproto == 6 and self._tcp:
            # TCP health: netmon's own (IANA's registry has no element for an RTT or a
            # retransmission count): the RTT samples this flow's packets started, and its
            # data segments seen again, within the record.
            rtts = sorted(rec.rtts)
            out["rtt_samples"] = len(rtts)
            if rtts:
                out.update(rtt_min_ns=rtts[0], rtt_median_ns=rtts[len(rtts) // 2],
                           rtt_max_ns=rtts[-1])
            out["retransmissions"] = rec.retrans
        return out

    def render(self, records) -> str:
        return "".join(self._dumps(self.record(r)) + "\n" for r in records)
