"""The one Python mirror of bpf/xdp_monitor.h: every shared struct, constant and enum.

Plain Python (the struct module only): events.py, filters.py, flows.py and the
capture records read their layouts from here, and the loader checks every
struct's size against the object's BTF before anything is read or written
(STRUCTS). A change to the header is a change here, in one place.
"""

from __future__ import annotations

import struct

ADDR_LEN = 16  # NM_ADDR_LEN

# struct nm_event: ts_ns, ifindex, len, then the flow part (saddr .. flags), then the
# direction, a pad byte and the segment count.
EVENT_TIME_FIELDS = "QII"
EVENT_FLOW_FIELDS = "16s16sHHHBBBBBB"
EVENT_TAIL_FIELDS = "BxH"
EVENT = struct.Struct("=" + EVENT_TIME_FIELDS + EVENT_FLOW_FIELDS + EVENT_TAIL_FIELDS)

# nm_event.flags
EV_PORTS = 0x01
EV_ICMP = 0x02
EV_FRAG = 0x04
EV_TCPFLAGS = 0x08

# nm_event.dir
DIR_IN, DIR_OUT = 0, 1
DIR_NAMES = ("in", "out")

# struct nm_config, native byte order: each option up to ALT values (NM_ALT), how many
# given apart: three arrays of struct nm_prefix (net, mask, family, padding), then the
# ports', vlan's, match, proto's, the counts, capture's snaplen (0: no capture) and
# cap_events, the flows, quiet and expression switches, TCP health's switches and gap,
# epoch_ns, and the owner's pid.
ALT = 8
PREFIX = struct.Struct("=16s16sB3x")
CONFIG = struct.Struct("=" + "16s16sB3x" * 3 * ALT + f"{ALT}H" * 4
                       + f"H{ALT}B8BBB4xIBBBBB3xIQII")
CONFIG_OWNER_OFFSET = CONFIG.size - 8  # nm_config.owner

# nm_config.expr
EXPR_ON, EXPR_LEN, EXPR_IF = 0x01, 0x02, 0x04

# struct nm_expr_args: wire_len, ifindex, tag, dir, tagged (translate.py's ARG_* offsets)
EXPR_ARGS = struct.Struct("=IIIBB2x")
# struct nm_expr_frame: the args, then the translation's room (translate.py's *_AT)
EXPR_FRAME = struct.Struct(f"={EXPR_ARGS.size}s4QQ16IQQQ")

# nm_config.match
M_PROTO = 0x0001
M_SADDR = 0x0002
M_DADDR = 0x0004
M_SPORT = 0x0008
M_DPORT = 0x0010
M_HOST = 0x0020
M_PORT = 0x0040
M_VLAN = 0x0080

# enum nm_proto: the protocols matched packets are counted by (--metrics' label values).
PROTO_NAMES = ("tcp", "udp", "sctp", "icmp", "icmpv6", "other")
# enum nm_counter: the order of struct nm_counters' fields.
COUNTER_NAMES = ("seen", "non_ip", "malformed", "matched", "sent", "send_failed",
                 "pull_failed", "copy_failed", "flow_overflow", "flow_overflow_bytes",
                 "expr_not_ip", "drop_unkeyed",
                 "tcp_data", "tcp_retrans", "tcp_reorder", "rtt_samples", "rtt_unmatched",
                 "tcp_noroom",
                 *(f"packets_{p}" for p in PROTO_NAMES), *(f"bytes_{p}" for p in PROTO_NAMES))
COUNTERS = struct.Struct(f"={len(COUNTER_NAMES)}Q")

# Interface slots: counters per watched interface (0: interfaces not registered).
IF_SLOTS = 512  # NM_IF_SLOTS
IF_CACHE = 1024  # NM_IF_CACHE
IFSLOT = struct.Struct("=II")  # struct nm_ifslot: ifindex, slot

# Flows: struct nm_flow_key and struct nm_flow, counted into two tables by turns.
FLOW_KEY = struct.Struct("=IBBBxHHH2x16s16s")
FLOW_VALUE = struct.Struct("=QQQQ8s")  # packets, bytes, first_ns, last_ns, a byte per flag
FLOW_KEY4 = struct.Struct("=IBBBxHHH2x4s4s")  # struct nm_flow_key4: IPv4's, shorter
# Per side (flowside's value): its table for IPv6 keys, and for IPv4's.
FLOW_TABLES = (("flows0", "flows4_0"), ("flows1", "flows4_1"))
XDP_PROGRAM = "xdp_monitor"  # the XDP program's name: how a leftover one is known

# Capture records (the layout is drawn in the header).
MAX_SNAPLEN = 65376  # NM_MAX_SNAPLEN
CAP_RAW_MAX = 65536  # NM_CAP_RAW_MAX
CAP_BLOCK = 0x8E4D0001  # NM_CAP_BLOCK: the local-use block type between EPBs
CAP_TAIL = 16  # NM_CAP_TAIL: block type, gap length, seq, failed
SCRATCH = struct.Struct(f"=II{CAP_RAW_MAX + 128}s")  # struct nm_scratch: seq, failed, raw

# netmon drops: struct nm_drop_key (ifindex, reason, location) and what struct nm_drop
# adds to its struct nm_event (location, reason); struct nm_hdrbuf.
DROP_KEY = struct.Struct("=IIQ")
DROP_TAIL = struct.Struct("=QI4x")
HDR_BUF = 256  # NM_HDR_BUF
HDRBUF_SIZE = HDR_BUF + 64

# TCP health (netmon rtt): nm_config.tcp, struct nm_tcp_sample's kinds and what it adds
# to its struct nm_event (rtt_ns, seq, kind), the histograms (struct nm_rtt_hist: count,
# sum_ns, the buckets), the state's key and value (struct nm_tcp_key, nm_tcp_half x 2
# and the sweep generation).
TCP_MEASURE, TCP_EVENTS = 0x01, 0x02
TK_RTT_TS, TK_RTT_SYN, TK_RTT_ICMP, TK_RETRANS, TK_REORDER = 1, 2, 3, 4, 5
TCP_TAIL = struct.Struct("=QIB3x")
RTT_BUCKETS = 128  # NM_RTT_BUCKETS
RTT_HIST = struct.Struct(f"=QQ{RTT_BUCKETS}Q")
TCP_KEY = struct.Struct("=IHBB2H16s16s")
TCP_KEY4 = struct.Struct("=IHBB2H4s4s")  # struct nm_tcp_key4: IPv4's, in tcpstate4
TCP_HALF = struct.Struct("=QQIIIIIBBBB")
TCP_STATE = struct.Struct(f"={TCP_HALF.size}s{TCP_HALF.size}sI4x")
# struct nm_tcp_in after its event: l3, l4, iplen, l2len, slot (never read here)
TCP_IN_TAIL = struct.Struct("=IIIII4x")

# Every struct the object and netmon share, by name: its size here. The loader holds
# each against the object's BTF (a struct the object's BTF lacks is a build mismatch).
STRUCTS = {
    "nm_event": EVENT.size,
    "nm_prefix": PREFIX.size,
    "nm_config": CONFIG.size,
    "nm_expr_args": EXPR_ARGS.size,
    "nm_expr_frame": EXPR_FRAME.size,
    "nm_drop": EVENT.size + DROP_TAIL.size,
    "nm_drop_key": DROP_KEY.size,
    "nm_hdrbuf": HDRBUF_SIZE,
    "nm_counters": COUNTERS.size,
    "nm_ifslot": IFSLOT.size,
    "nm_flow_key": FLOW_KEY.size,
    "nm_flow_key4": FLOW_KEY4.size,
    "nm_flow": FLOW_VALUE.size,
    "nm_scratch": SCRATCH.size,
    "nm_tcp_sample": EVENT.size + TCP_TAIL.size,
    "nm_rtt_hist": RTT_HIST.size,
    "nm_tcp_key": TCP_KEY.size,
    "nm_tcp_key4": TCP_KEY4.size,
    "nm_tcp_half": TCP_HALF.size,
    "nm_tcp_state": TCP_STATE.size,
    "nm_tcp_in": EVENT.size + TCP_IN_TAIL.size,
}
