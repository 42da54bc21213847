/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The contract between netmon's BPF programs (XDP and tc hooks) and its Python side.
 *
 * Every struct here has fixed-width fields and explicit padding so that its
 * one Python mirror (netmon/kernel/abi.py, all of them) can describe it with
 * the struct module. netmon checks at load time that every size it packs
 * equals the size in the object's BTF.
 */
#ifndef __XDP_MONITOR_H
#define __XDP_MONITOR_H

#define NM_ADDR_LEN 16

/* nm_event.flags */
#define NM_EV_PORTS    0x01 /* sport/dport are valid */
#define NM_EV_ICMP     0x02 /* icmp_type/icmp_code are valid */
#define NM_EV_FRAG     0x04 /* part of a fragmented IP datagram */
#define NM_EV_TCPFLAGS 0x08 /* tcp_flags is valid */

/* Drops: the most bytes of a dropped packet's headers copied to be parsed (a power of 2). */
#define NM_HDR_BUF 256

#define NM_DROP_KEYS 4096          /* the drops table: interfaces x reasons (x locations) */

/* A copy of a dropped packet's headers, parsed there (slack: see at()). */
struct nm_hdrbuf {
	__u8  bytes[NM_HDR_BUF + 64];
};

/* nm_event.dir: which way the packet crossed the interface. */
#define NM_DIR_IN  0
#define NM_DIR_OUT 1

/*
 * What nm_expr(), a filter expression translated from classic BPF, knows of a frame
 * beside its bytes (netmon/expression/translate.py reads these fields by offset).
 */
struct nm_expr_args {
	__u32 wire_len;            /* the frame's length on the wire (libpcap's `len`) */
	__u32 ifindex;             /* `ifindex N` */
	__u32 tag;                 /* tagged: the tag's TPID << 16 | TCI */
	__u8  dir;                 /* NM_DIR_*: `inbound`, `outbound` */
	__u8  tagged;              /* tc: the outer VLAN tag is in the skb's metadata */
	__u8  _pad[2];
};

/*
 * Where the expression runs. netmon puts its translation in place of the call to
 * nm_expr() (netmon/kernel/splice.py): a BPF-to-BPF call and return cost more than a
 * short expression itself (a return goes through a thunk on CPUs with return
 * mitigations). It then runs in its caller's frame, and keeps here what a function
 * keeps in its own (translate.py's *_AT offsets). Only ``args`` is written before.
 */
struct nm_expr_frame {
	struct nm_expr_args args;
	__u64 saved[4];            /* the caller's r6-r9, given back at the end */
	__u64 ctx;                 /* the hook's context, for the helpers that copy bytes */
	__u32 mem[16];             /* classic BPF's scratch memory, M[] */
	__u64 scratch;             /* the helpers' buffer */
	__u64 value;               /* a value built byte by byte (a load across a tag) */
	__u64 offset;              /* and the offset it is read from */
};

/* One record per matching IP packet, sent through the perf event array. */
struct nm_event {
	__u64 ts_ns;               /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 ifindex;             /* interface the packet crossed */
	__u32 len;                 /* frame length at the hook (tc: skb->len, maybe GRO/GSO-merged) */
	__u8  saddr[NM_ADDR_LEN];  /* IPv4 uses the first 4 bytes */
	__u8  daddr[NM_ADDR_LEN];
	__u16 sport;               /* host byte order */
	__u16 dport;
	__u16 vlan;                /* outer VLAN id, 0 when untagged */
	__u8  family;              /* 4 or 6 */
	__u8  ipproto;             /* IANA protocol number */
	__u8  icmp_type;
	__u8  icmp_code;
	__u8  tcp_flags;           /* FIN=0x01 ... CWR=0x80 */
	__u8  flags;               /* NM_EV_* */
	__u8  dir;                 /* NM_DIR_* */
	__u8  _pad;
	__u16 segs;                /* packets merged into this one by GRO/GSO; 1 if none */
};

/* netmon drops: one record per dropped packet that matched, and the drops' counts. */
struct nm_drop {
	struct nm_event ev;        /* its headers, parsed (ev.len: from its first header) */
	__u64 location;            /* where the kernel dropped it: an address in a function */
	__u32 reason;              /* enum skb_drop_reason, this kernel's values; 0: none (< 5.17) */
	__u32 _pad;
};

/* The drops table's key (its values: per-CPU counts). */
struct nm_drop_key {
	__u32 ifindex;             /* the packet's device, or the one it came in on; 0: none */
	__u32 reason;
	__u64 location;            /* only for drops with no reason (NOT_SPECIFIED, < 5.17); else 0 */
};

/* nm_config.match: which filters are on. All of them must hold. */
#define NM_M_PROTO 0x0001
#define NM_M_SADDR 0x0002
#define NM_M_DADDR 0x0004
#define NM_M_SPORT 0x0008
#define NM_M_DPORT 0x0010
#define NM_M_HOST  0x0020  /* source or destination address */
#define NM_M_PORT  0x0040  /* source or destination port */
#define NM_M_VLAN  0x0080  /* outer VLAN id */

/* An address prefix: (addr & mask) == net, for packets of one family. */
struct nm_prefix {
	__u8  net[NM_ADDR_LEN];    /* already masked */
	__u8  mask[NM_ADDR_LEN];
	__u8  family;              /* 4 or 6 */
	__u8  _pad[3];
};

/* nm_config.expr */
#define NM_EXPR_ON  0x01           /* nm_expr() holds an expression: call it */
#define NM_EXPR_LEN 0x02           /* it reads the wire length (XDP asks a helper for it) */
#define NM_EXPR_IF  0x04           /* it reads the interface or direction (`ifindex`, `inbound`) */

/* The values one filter option may be given (a packet must match one of them). */
#define NM_ALT 8

/*
 * Filter configuration, written into .rodata before load. Because it is
 * const, the verifier prunes the branches of every filter that is off, and
 * every value past an option's count, so an unfiltered run pays nothing for
 * the filter code. Each option holds up to NM_ALT values, n_* of them given:
 * any of them may match ("or"); the options must all hold ("and").
 */
struct nm_config {
	struct nm_prefix src[NM_ALT];
	struct nm_prefix dst[NM_ALT];
	struct nm_prefix host[NM_ALT];
	__u16 sport[NM_ALT];       /* host byte order */
	__u16 dport[NM_ALT];
	__u16 port[NM_ALT];
	__u16 vlan[NM_ALT];
	__u16 match;               /* NM_M_*: the options given */
	__u8  proto[NM_ALT];       /* IANA protocol numbers */
	__u8  n_src, n_dst, n_host, n_sport, n_dport, n_port, n_vlan, n_proto;
	__u8  replay;              /* -r: each frame's wire length is in the wirelen map */
	__u8  any_if;              /* drops: on any interface (else the registered ones) */
	__u8  _pad[4];
	__u32 snaplen;             /* capture: packet bytes kept per packet; 0: no capture */
	__u8  cap_events;          /* capture: records carry the event too (for lines) */
	__u8  flows;               /* flows: count packets in the flow table, send no events */
	__u8  quiet;               /* --quiet: count only (the counters, --metrics), send nothing */
	__u8  expr;                /* NM_EXPR_*: a filter expression is spliced into nm_expr() */
	__u8  tcp;                 /* NM_TCP_*: TCP health (netmon rtt) */
	__u8  _pad2[3];
	__u32 rtt_gap_us;          /* TCP health: the least time between two samples' starts, per flow way */
	__u64 epoch_ns;            /* capture: CLOCK_REALTIME - CLOCK_MONOTONIC at start */
	/*
	 * The pid of the netmon that loaded the program; never read by the program. A
	 * program attached through netlink outlives a netmon killed with kill -9: a later
	 * netmon reads this from the program's .rodata, finds the owner gone, and removes it.
	 */
	__u32 owner;
	__u32 netns;               /* drops: the inode of netmon's network namespace */
};

/*
 * Capture records. With a snaplen, each matching packet reaches user space as
 * one perf record that already holds the packet's pcapng Enhanced Packet Block,
 * laid out so that the records a ring holds, back to back, are from the first
 * EPB on a valid stretch of pcapng: what lies between two EPBs (the end of one
 * record, the perf framing of the next) is one local-use block, which pcapng
 * readers skip. Writing a ring's new records to a file is then one slice, with
 * no work per packet in user space.
 *
 *   perf_event_header (8), u32 raw size (4)    | the gap block's middle
 *   struct nm_event (64), if cfg.cap_events    |
 *   u32 gap length                             | the gap block's trailing length
 *   EPB: type 6, length, interface id (the slot), time high, time low (ns since
 *        the epoch), captured length, original length, the bytes, zeros to 4,
 *        epb_flags (direction), end of options, length
 *   a 12-byte local block when the EPB's length is not a multiple of 8, so that
 *        the record's is and perf adds no padding
 *   u32 NM_CAP_BLOCK, u32 gap length           | the gap block's head
 *   u32 seq, u32 failed                        |
 *
 * The gap block is NM_CAP_TAIL + 12 + 4 bytes long, plus the event's 64 when
 * records carry it. seq counts the records this CPU has sent, failed the ones
 * it could not send: a ring's records hold consecutive seqs, and a reader who
 * sees failed unchanged since the ring's last record knows that no loss report
 * sits between them (the kernel writes one before the next record after a
 * failure).
 */
#define NM_CAP_BLOCK   0x8E4D0001 /* a local-use block type: bit 31 set */
#define NM_CAP_TAIL    16
#define NM_CAP_PAD     12         /* the smallest block: type, length, length */
#define NM_EPB_HEAD    28         /* type .. original length */
#define NM_EPB_OPTS    16         /* epb_flags (8), end of options (4), length (4) */
#define NM_EPB_TYPE    6
#define NM_EPB_FLAGS   2          /* option code */
#define NM_EPB_IN      1          /* epb_flags: inbound */
#define NM_EPB_OUT     2          /* epb_flags: outbound */

/*
 * The most packet bytes one capture record carries. A perf record's size is a
 * u16 and a multiple of 8: 65528 at most, of which the perf framing (12), the
 * event (64), the gap length (4), NM_EPB_HEAD, NM_EPB_OPTS, NM_CAP_PAD and
 * NM_CAP_TAIL are not packet bytes.
 */
#define NM_MAX_SNAPLEN 65376
#define NM_CAP_RAW_MAX 65536      /* room for the largest record's raw data; a power of 2 */

/* One CPU's capture state: where its records are built, and their counts. */
struct nm_scratch {
	__u32 seq;                 /* records this CPU sent */
	__u32 failed;              /* records this CPU could not send */
	__u8  raw[NM_CAP_RAW_MAX + 128]; /* slack for the verifier: see put32(), cap_copy_len() */
};

/*
 * Counters are kept per watched interface and direction. netmon gives each
 * interface it attaches to a slot (1 .. NM_IF_SLOTS-1; slot 0 counts frames of
 * interfaces it has not registered) and writes ifindex -> slot into a
 * direct-mapped cache indexed by ifindex % NM_IF_CACHE, or, where two watched
 * interfaces share a cache line, into a hash map. The counters array is then
 * indexed by slot * 2 + direction.
 */
#define NM_IF_SLOTS 512
#define NM_IF_CACHE 1024

struct nm_ifslot {
	__u32 ifindex;
	__u32 slot;
};

/* The protocols the per-protocol counters tell apart. */
enum nm_proto {
	NM_PROTO_TCP = 0,
	NM_PROTO_UDP,
	NM_PROTO_SCTP,
	NM_PROTO_ICMP,
	NM_PROTO_ICMPV6,
	NM_PROTO_OTHER,      /* any other IP protocol */
	NM_PROTO_MAX,
};

/* Indexes into struct nm_counters. */
enum nm_counter {
	NM_CNT_SEEN = 0,     /* every frame the hook saw */
	NM_CNT_NON_IP,       /* frames that carry no IPv4/IPv6 packet */
	NM_CNT_MALFORMED,    /* IP frames too short or inconsistent to parse */
	NM_CNT_MATCHED,      /* packets every filter accepted */
	NM_CNT_SENT,         /* events written to the perf buffer */
	NM_CNT_SEND_FAILED,  /* bpf_perf_event_output() errors: buffer full */
	NM_CNT_PULL_FAILED,  /* tc: bpf_skb_pull_data() errors; headers left unread */
	NM_CNT_COPY_FAILED,  /* capture: packet bytes could not be copied, not sent; drops: headers */
	NM_CNT_FLOW_OVERFLOW,       /* flows: packets not counted, the flow table full */
	NM_CNT_FLOW_OVERFLOW_BYTES, /* flows: their bytes */
	NM_CNT_EXPR_OTHER,   /* frames a filter expression matched that carry no IP packet */
	NM_CNT_DROP_UNKEYED, /* drops: not in the drops table, it was full (counted here only) */
	/* TCP health (nm_config.tcp), by the direction of the packet, but RTT samples: by
	 * the direction of the packet that started them (the component, see nm_rtt_hist). */
	NM_CNT_TCP_DATA,     /* TCP segments with data (GSO/GRO-merged: their segments) */
	NM_CNT_TCP_RETRANS,  /* of them, data this interface had seen already */
	NM_CNT_TCP_REORDER,  /* of them, data that filled a gap (came out of order) */
	NM_CNT_RTT_SAMPLES,  /* round trips measured */
	NM_CNT_RTT_UNMATCHED, /* samples started and never ended: no echo came, or another first */
	NM_CNT_TCP_NOROOM,   /* packets of connections the state table had no room for */
	/*
	 * Matched packets and their bytes on the wire (GSO/GRO: each segment with its
	 * headers) by protocol, NM_PROTO_* after each base: --metrics serves them.
	 */
	NM_CNT_PROTO_PACKETS,
	NM_CNT_PROTO_BYTES = NM_CNT_PROTO_PACKETS + NM_PROTO_MAX,
	NM_CNT_MAX = NM_CNT_PROTO_BYTES + NM_PROTO_MAX,
};

struct nm_counters {
	__u64 n[NM_CNT_MAX];
};

/*
 * Flows (netmon top, --flows). Each hook adds every matching packet to a flow
 * in one of two hash maps, flows0 and flows1; flowside says which. Once a
 * second netmon flips flowside, waits until no program can still be using the
 * other table (see the flowsync map), and reads and empties that one, which
 * no program writes any more: no count is lost between the read and the
 * delete, and a table only has to hold the flows of one interval.
 *
 * ICMP and ICMPv6 flows are told apart by type and code, in the ports' place.
 */
struct nm_flow_key {
	__u32 ifindex;
	__u8  dir;                 /* NM_DIR_* */
	__u8  family;              /* 4 or 6 */
	__u8  ipproto;
	__u8  _pad;
	__u16 vlan;
	__u16 sport;               /* ICMP: type */
	__u16 dport;               /* ICMP: code */
	__u16 _pad2;
	__u8  saddr[NM_ADDR_LEN];
	__u8  daddr[NM_ADDR_LEN];
};

/*
 * An IPv4 flow's key: nm_flow_key with 4-byte addresses, in tables of its own. The
 * hash of a key and its compare cost by the byte: 24 bytes instead of 48 take ~17 ns
 * off each packet here (bench table h: the floor rows).
 */
struct nm_flow_key4 {
	__u32 ifindex;
	__u8  dir;
	__u8  family;              /* 4 */
	__u8  ipproto;
	__u8  _pad;
	__u16 vlan;
	__u16 sport;
	__u16 dport;
	__u16 _pad2;
	__u8  saddr[4];
	__u8  daddr[4];
};

/*
 * One flow's counts in one interval. The default build shares one entry among
 * all CPUs and adds to it atomically; NM_FLOWS_PERCPU builds the per-CPU
 * variant the bench compares it with (README: Flows).
 */
struct nm_flow {
	__u64 packets;             /* GSO/GRO-merged packets count their segments */
	__u64 bytes;               /* of IP (octetDeltaCount): a merged packet's headers once per segment */
	__u64 first_ns;            /* CLOCK_MONOTONIC, coarse (a tick) where the kernel has it */
	/*
	 * first_ns while the packet that made the entry is its only one; 0 once another
	 * came: the clock is read when a flow is made, not per packet, and netmon takes
	 * the time it took the table as the flow's last packet's (a second at most later).
	 */
	__u64 last_ns;
	/*
	 * The OR of the packets' TCP flags, a byte per flag (bit i of the flags byte):
	 * 1 once a packet had it. A store of 1 is the same whichever CPU makes it, so no
	 * flag is lost without an atomic OR (which 5.10's verifier refuses to even see).
	 */
	__u8  tcp_flags[8];
};

/*
 * TCP health (netmon rtt): round-trip times from the packets a hook sees, and
 * retransmissions from their sequence numbers, in the kernel.
 *
 * A sample starts at a packet that carries something the other side will echo: a
 * new TCP timestamp (TSval; its TSecr comes back), a SYN or SYN-ACK (its sequence
 * number + 1 comes back as the ACK), an ICMP echo request (the reply carries its
 * sequence number). It ends at the first packet the other way that echoes it. One
 * sample is outstanding per connection and way, and samples start at most every
 * rtt_gap_us on each.
 *
 * Which side echoed says what was measured: a sample started by a packet going out
 * of the interface is answered from beyond it (on a host's NIC: the network); one
 * started by a packet coming in is answered from behind it (on a guest's tap, whose
 * "in" is what the guest sent: the network again; the other way, the guest). The
 * kernel keeps them apart by the starting packet's direction; user space names them.
 */
#define NM_TCP_MEASURE 0x01        /* nm_config.tcp: histograms and counters */
#define NM_TCP_EVENTS  0x02        /* and a record (struct nm_tcp_sample) per sample and retransmission */

/* struct nm_tcp_sample.kind */
#define NM_TK_RTT_TS      1        /* TSval to the TSecr that echoed it */
#define NM_TK_RTT_SYN     2        /* the handshake: SYN to SYN-ACK, SYN-ACK to ACK */
#define NM_TK_RTT_ICMP    3        /* ICMP (v6) echo request to its reply */
#define NM_TK_RETRANS     4        /* a data segment whose bytes were seen already */
#define NM_TK_REORDER     5        /* a data segment that filled a gap */

/* One RTT sample or retransmission, sent when nm_config.tcp has NM_TCP_EVENTS. */
struct nm_tcp_sample {
	/*
	 * RTT: the packet that started the sample (its direction; its time: the echo's);
	 * a retransmission or reordering: the segment.
	 */
	struct nm_event ev;
	__u64 rtt_ns;              /* RTT samples */
	__u32 seq;                 /* retransmission, reordering: the segment's first sequence number */
	__u8  kind;                /* NM_TK_* */
	__u8  _pad[3];
};

/*
 * RTT histograms, one per interface slot and the direction of the packets that start
 * samples (slot * 2 + dir). Bucket 0 holds RTTs under 1024 ns; bucket b >= 1 those in
 * [2^k * (4 + s) / 4, 2^k * (5 + s) / 4) ns for k = 10 + (b - 1) / 4, s = (b - 1) % 4:
 * four to a power of two, from a microsecond (a LAN's RTT within 25%) to an hour; the
 * last bucket also holds everything above. Counts of equal buckets add up exactly, so
 * hours fold into days.
 */
#define NM_RTT_BUCKETS 128

struct nm_rtt_hist {
	__u64 count;
	__u64 sum_ns;
	__u64 n[NM_RTT_BUCKETS];
};

/*
 * TCP health's state: one entry per connection (ICMP: per pair of hosts and echo id)
 * and interface, both ways in one entry. The key is the same both ways: the endpoint
 * with the lower (address, port) first; half[0] is its way.
 */
struct nm_tcp_key {
	__u32 ifindex;
	__u16 vlan;
	__u8  family;
	__u8  ipproto;
	__u16 port[2];             /* ICMP: the echo's id in both */
	__u8  addr[2][NM_ADDR_LEN];
};

/* IPv4's: 4-byte addresses, in a table of its own (the hash and compare cost by the byte,
 * as the flows' keys do: bench o). */
struct nm_tcp_key4 {
	__u32 ifindex;
	__u16 vlan;
	__u8  family;
	__u8  ipproto;
	__u16 port[2];
	__u8  addr[2][4];
};

struct nm_tcp_half {
	__u64 pend_ns;             /* when the outstanding sample started */
	__u64 last_ns;             /* when the last sample started (the rate limit) */
	__u32 pend_val;            /* what the echo carries: the TSval, the SYN's seq + 1, the echo's seq */
	__u32 ts_last;             /* the last TSval this way */
	__u32 nxt;                 /* the highest sequence number seen, + 1 */
	__u32 hole_lo;             /* a gap below nxt not seen yet: [hole_lo, hole_hi) */
	__u32 hole_hi;
	__u8  pend_kind;           /* NM_TK_RTT_*: the outstanding sample's; 0: none */
	__u8  seq_known;           /* nxt holds a value */
	__u8  hole;                /* hole_* hold one */
	__u8  ts_known;            /* ts_last holds one */
};

/*
 * What a hook hands the function that measures TCP health (per CPU): its event, where
 * the IP and transport headers are from the packet's start, the IP length its header
 * gives, the link-layer header's length, and its interface slot. The measuring is a
 * function of its own (a global one, which the verifier walks once, not once per path
 * through the hook's parser: inlined, it took Linux 6.1's verifier past its million
 * instructions).
 */
struct nm_tcp_in {
	struct nm_event ev;
	__u32 l3;
	__u32 l4;
	__u32 iplen;
	__u32 l2len;
	__u32 slot;
	__u32 _pad;
};

/*
 * gen: the sweep generation (the tcpgen map) when a packet last touched the entry:
 * netmon deletes entries no packet touched for two sweeps.
 */
struct nm_tcp_state {
	struct nm_tcp_half half[2];
	__u32 gen;
	__u32 _pad;
};

#endif /* __XDP_MONITOR_H */
