// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * netmon's BPF programs: parse each frame, apply the filters the user asked
 * for, count, and send one fixed-size record per matching IP packet to user
 * space through a perf event array.
 *
 * One parser, three hooks: XDP (ingress, in the driver or generic), and tc
 * ingress and egress (tcx links on >= 6.6, cls_bpf direct-action before). They
 * never change a packet and never end another program's chain: XDP returns
 * XDP_PASS, tc returns TC_ACT_UNSPEC (== TCX_NEXT), on every path.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "xdp_monitor.h"

/* UAPI headers clash with vmlinux.h, so the few constants we need live here. */
#define ETH_P_IP     0x0800
#define ETH_P_IPV6   0x86DD
#define ETH_P_8021Q  0x8100
#define ETH_P_8021AD 0x88A8
#define IP_MF        0x2000
#define IP_OFFSET    0x1FFF
#define VLAN_VID_MASK 0x0FFF
#define VLAN_MAX_DEPTH 2
#define VLAN_TAG_LEN 4
#define ETH_ADDRS_LEN 12   /* destination and source MAC: a tag goes after them */
#define IP6_OFFSET   0xFFF8
#define IP6_MF       0x0001
#define IPV6_EXT_MAX 8
/* tc: "no verdict", so the next filter runs. The same value is tcx's TCX_NEXT. */
#define NM_TC_NEXT   (-1)
/* tc: the most header bytes the parser reads; pulled into the linear part if need be. */
#define NM_PULL_LEN  256

/* IPv6 extension headers netmon walks to find the transport header. */
#define NEXTHDR_HOP      0
#define NEXTHDR_ROUTING  43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH     51
#define NEXTHDR_DEST     60
#define IPPROTO_ICMPV6   58

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct nm_config cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

/* Indexed by slot * 2 + direction; see struct nm_ifslot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NM_IF_SLOTS * 2);
	__type(key, __u32);
	__type(value, struct nm_counters);
} counters SEC(".maps");

/* ifindex -> slot, direct-mapped by ifindex % NM_IF_CACHE; written by netmon. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NM_IF_CACHE);
	__type(key, __u32);
	__type(value, struct nm_ifslot);
} ifcache SEC(".maps");

/*
 * -r: the length on the wire of the frame a test run is given, as the file has it,
 * where that is not the bytes given (a capture's snap length cut them, or netmon
 * gave a long frame's head only); 0: the bytes given. Written by netmon.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} wirelen SEC(".maps");

/* Drops: a copy of the dropped packet's headers, per CPU, where the parser reads them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nm_hdrbuf);
} hdrbuf SEC(".maps");

/* Drops counted by interface and reason (and location, where there is no reason); exact. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NM_DROP_KEYS);
	__type(key, struct nm_drop_key);
	__type(value, __u64);
} drops SEC(".maps");

/* ifindex -> slot for interfaces whose cache entry another one holds. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NM_IF_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} ifslots SEC(".maps");

/*
 * Capture: one record builder per CPU (netmon sizes it to the possible CPUs),
 * indexed by bpf_get_smp_processor_id(). An ARRAY and not a PERCPU_ARRAY:
 * the kernel refuses per-CPU values over 32 KiB (PCPU_MIN_UNIT_SIZE), and a
 * builder holds a record of up to 64 KiB.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nm_scratch);
} scratch SEC(".maps");

/* Flows: two tables, one counted into while netmon reads the other; for IPv4 two
 * more, with the shorter key (struct nm_flow_key4). */
#ifdef NM_FLOWS_PERCPU
#define NM_FLOW_MAP BPF_MAP_TYPE_PERCPU_HASH
#else
#define NM_FLOW_MAP BPF_MAP_TYPE_HASH
#endif
#define NM_EEXIST 17

struct flow_table {
	__uint(type, NM_FLOW_MAP);
	__uint(max_entries, 1);    /* netmon sets --flow-entries before load */
	__type(key, struct nm_flow_key);
	__type(value, struct nm_flow);
} flows0 SEC(".maps"), flows1 SEC(".maps");

struct flow_table4 {
	__uint(type, NM_FLOW_MAP);
	__uint(max_entries, 1);    /* netmon sets --flow-entries before load */
	__type(key, struct nm_flow_key4);
	__type(value, struct nm_flow);
} flows4_0 SEC(".maps"), flows4_1 SEC(".maps");

/* Which table the hooks count into: 0 or 1. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} flowside SEC(".maps");

/*
 * Never read by a program. Updating an array of maps returns only once every
 * BPF program running at the time has finished (the kernel waits for them so
 * that user space knows the new inner map is the one in use): after flipping
 * flowside, netmon updates this map's one slot, and from then on no program
 * still counts into the table it is about to read.
 */
struct flowsync_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} flowsync_inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct flowsync_inner);
} flowsync SEC(".maps") = { .values = { &flowsync_inner } };

/* TCP health (see xdp_monitor.h): the connections' state, sized by netmon (1 when off). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct nm_tcp_key);
	__type(value, struct nm_tcp_state);
} tcpstate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct nm_tcp_key4);
	__type(value, struct nm_tcp_state);
} tcpstate4 SEC(".maps");

/* RTT histograms by slot * 2 + the starting packet's direction; shared, added to atomically
 * (a sample is rare beside a packet; per-CPU, 128 buckets x 1024 would be 1 MiB a CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NM_IF_SLOTS * 2);
	__type(key, __u32);
	__type(value, struct nm_rtt_hist);
} rtthist SEC(".maps");

/* The sweep generation netmon is in (struct nm_tcp_state's gen); written by netmon. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tcpgen SEC(".maps");

/*
 * Where the parser is in a frame: in the packet itself (buf NULL: XDP, tc), or in
 * a copy of its headers (drops: buf the copy's start, see at()).
 */
struct cursor {
	void *pos;
	void *end;
	void *buf;
	/* TCP health: where the IP and the transport header start (from the frame's first
	 * byte; l4 0: no transport header), the IP length the header gives (0: none, a GSO
	 * packet over 64 KiB). Offsets, not pointers: the hooks' stack is near its limit. */
	__u16 l3;
	__u16 l4;
	__u32 iplen;
};

/* Where TCP health finds a packet's headers (found again from tcpin's offsets). */
struct tcp_at {
	void *l3;
	void *l4;
	void *end;
	__u32 iplen;
};

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

/*
 * The first 8 bytes of every IPv6 extension header netmon walks (none is
 * shorter): next header and length, then, in a fragment header, the offset.
 */
struct ipv6_ext {
	__u8   nexthdr;
	__u8   hdrlen;             /* a fragment header's is reserved (0) */
	__be16 frag_off;           /* fragment headers only */
	__be32 more;
};

/* What netmon reads of an ICMP or ICMPv6 header. */
struct icmp_head {
	__u8   type;
	__u8   code;
	__be16 checksum;
};

/* SCTP's common header: ports, verification tag, checksum. */
struct sctp_head {
	__be16 source;
	__be16 dest;
	__be32 vtag;
	__be32 checksum;
};

_Static_assert((NM_IF_CACHE & (NM_IF_CACHE - 1)) == 0,
	       "slot_of() indexes ifcache by ifindex & (NM_IF_CACHE - 1)");
_Static_assert((NM_CAP_RAW_MAX & (NM_CAP_RAW_MAX - 1)) == 0,
	       "put32() keeps offsets inside the builder with & (NM_CAP_RAW_MAX - 1)");
_Static_assert((NM_RTT_BUCKETS & (NM_RTT_BUCKETS - 1)) == 0,
	       "rtt_sample() keeps a bucket's index inside with & (NM_RTT_BUCKETS - 1)");

/* The slot netmon gave the interface (0: one it did not register). */
static __always_inline __u32 slot_of(__u32 ifindex)
{
	__u32 key = ifindex & (NM_IF_CACHE - 1);
	struct nm_ifslot *cached = bpf_map_lookup_elem(&ifcache, &key);
	__u32 *found;

	if (cached && cached->ifindex == ifindex)
		return cached->slot;
	found = bpf_map_lookup_elem(&ifslots, &ifindex);
	return found ? *found : 0;
}

/* The counters of one interface slot and direction on this CPU. */
static __always_inline struct nm_counters *counters_at(__u32 slot, __u8 dir)
{
	__u32 key = slot * 2 + dir;

	return bpf_map_lookup_elem(&counters, &key);
}

static __always_inline void count(struct nm_counters *cnt, enum nm_counter idx)
{
	/* NULL only for a slot out of range, which netmon never writes. */
	if (cnt)
		cnt->n[idx] += 1;
}

/*
 * tc: the TCI of the outer VLAN tag the skb carries in its metadata, or -1.
 * Read afresh at each use: a value kept alive across the parser
 * would keep the verifier from merging its paths with and without a tag
 * (it doubled the instructions it went through).
 */
static __always_inline int meta_tag(struct __sk_buff *skb)
{
	asm volatile("" : : : "memory");  /* a fresh read, not one the compiler kept */
	if (!skb->vlan_present)
		return -1;
	return skb->vlan_tci & 0xFFFF;
}

/*
 * A header the parser has checked against the cursor's end, as the verifier can
 * follow it. In a packet: where it is (the check with end proved it). In a copy
 * (drops), a check of two pointers into a map value proves nothing to the
 * verifier; its offset, masked, does. The check put it under NM_HDR_BUF already,
 * so the mask changes nothing. Always inlined, with buf a constant NULL for the
 * packet hooks: their code is as it was without it (checked when this came in).
 */
static __always_inline void *at(const struct cursor *c, void *p)
{
	__u64 off;

	if (!c->buf)
		return p;
	off = p - c->buf;
	barrier_var(off);
	return c->buf + (off & (NM_HDR_BUF - 1));
}

/*
 * Ethernet header plus up to VLAN_MAX_DEPTH 802.1Q/802.1ad tags. Returns the
 * inner EtherType in network byte order, or -1 if the frame is too short.
 * ``tag``: -1, or the TCI of the outer tag that the kernel took out of the
 * frame into the skb's metadata (tc: at ingress always, at egress often),
 * which counts as the first of the frame's tags: the frame is read as it was
 * on the wire, as XDP reads it.
 */
static __always_inline int parse_ethhdr(struct cursor *c, __u16 *vlan, int tag)
{
	struct ethhdr *eth = c->pos;
	__be16 proto;

	if ((void *)(eth + 1) > c->end)
		return -1;
	eth = at(c, eth);
	c->pos = eth + 1;
	proto = eth->h_proto;
	if (tag >= 0)
		*vlan = tag & VLAN_VID_MASK;

#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		struct vlan_tag *inline_tag = c->pos;

		if (i == VLAN_MAX_DEPTH - 1 && tag >= 0)
			break;  /* the metadata's tag was the first */
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(inline_tag + 1) > c->end)
			return -1;
		inline_tag = at(c, inline_tag);
		if (i == 0 && tag < 0)
			*vlan = bpf_ntohs(inline_tag->tci) & VLAN_VID_MASK;
		proto = inline_tag->proto;
		c->pos = inline_tag + 1;
	}
	return proto;
}

/*
 * IPv4 header with options. Fills the event's network part (family set means
 * there is an event) and returns the protocol whose header follows, or -1 when
 * no transport header follows (a later fragment).
 */
static __always_inline int parse_iphdr(struct cursor *c, struct nm_event *ev)
{
	struct iphdr *iph = c->pos;
	__u32 hdrsize;
	__u16 frag;

	if ((void *)(iph + 1) > c->end)
		return -1;
	iph = at(c, iph);
	if (iph->version != 4 || iph->ihl < 5)
		return -1;
	hdrsize = iph->ihl * 4;
	if (c->pos + hdrsize > c->end)
		return -1;
	c->iplen = bpf_ntohs(iph->tot_len);
	c->pos += hdrsize;

	ev->family = 4;
	ev->ipproto = iph->protocol;
	__builtin_memcpy(ev->saddr, &iph->saddr, 4);
	__builtin_memcpy(ev->daddr, &iph->daddr, 4);
	frag = bpf_ntohs(iph->frag_off);
	if (frag & (IP_MF | IP_OFFSET))
		ev->flags |= NM_EV_FRAG;
	/* A later fragment carries no transport header. */
	if (frag & IP_OFFSET)
		return -1;
	return iph->protocol;
}

/*
 * How to step over each IPv6 next-header value, in a table so that the walk
 * below has no branch per kind of header. A switch on the kind (as before)
 * multiplied the verifier's paths by the kinds at every one of the 8 steps:
 * 287,000 instructions verified for the XDP program and 0.4-0.6 s of every
 * start-up; with the table, ~6,400 and 0.05 s (bench l). The values read from
 * the table are unknown to the verifier, so every kind takes one path.
 *
 * Each entry: bits 0-7 what to add to the header's length byte, 8-9 the shift
 * that makes bytes of it, 16-23 a mask for the length byte (0: a fixed size),
 * bit 24 a fragment header; 0: not an extension header. Its own section, so
 * that .rodata stays struct nm_config alone (netmon sets it whole).
 */
#define EXT_STEP(add, shift, lenmask, frag) ((add) | (shift) << 8 | (lenmask) << 16 | (frag) << 24)
const volatile __u32 ext_steps[256] SEC(".rodata.ext") = {
	[NEXTHDR_HOP]      = EXT_STEP(1, 3, 0xff, 0),  /* (len + 1) * 8 */
	[NEXTHDR_ROUTING]  = EXT_STEP(1, 3, 0xff, 0),
	[NEXTHDR_DEST]     = EXT_STEP(1, 3, 0xff, 0),
	[NEXTHDR_AUTH]     = EXT_STEP(2, 2, 0xff, 0),  /* (len + 2) * 4 */
	[NEXTHDR_FRAGMENT] = EXT_STEP(1, 3, 0, 1),     /* 8 */
};

/*
 * IPv6 header, then up to IPV6_EXT_MAX extension headers (hop-by-hop,
 * routing, fragment, destination options, AH). The event's protocol is the
 * first header that is not one of those, or the extension header where the
 * walk had to stop (cut short, or one too many). Returns the protocol whose
 * header follows, or -1 when none does.
 */
static __always_inline int parse_ipv6hdr(struct cursor *c, struct nm_event *ev)
{
	struct ipv6hdr *ip6h = c->pos;
	void *start;
	__u32 off = 0;
	__u8 nexthdr;

	if ((void *)(ip6h + 1) > c->end)
		return -1;
	ip6h = at(c, ip6h);
	if (ip6h->version != 6)
		return -1;
	start = ip6h + 1;
	c->iplen = bpf_ntohs(ip6h->payload_len);
	if (c->iplen)
		c->iplen += sizeof(*ip6h);

	ev->family = 6;
	__builtin_memcpy(ev->saddr, &ip6h->saddr, NM_ADDR_LEN);
	__builtin_memcpy(ev->daddr, &ip6h->daddr, NM_ADDR_LEN);
	nexthdr = ip6h->nexthdr;

#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		__u32 step = ext_steps[nexthdr];
		struct ipv6_ext *ext;
		__u32 size;
		__u16 frag;

		if (!step)
			goto done;
		ext = start + off;
		if ((void *)(ext + 1) > c->end)
			goto stuck;
		ext = at(c, ext);
		size = ((ext->hdrlen & (step >> 16 & 0xff)) + (step & 0xff)) << (step >> 8 & 3);
		/* Bounds the verifier sees (the compiler knows them, and would drop the mask). */
		barrier_var(size);
		size &= 0xfff;
		frag = bpf_ntohs(ext->frag_off) & -(step >> 24 & 1);
		if (frag & (IP6_OFFSET | IP6_MF))
			ev->flags |= NM_EV_FRAG;
		if (start + off + size > c->end)
			goto stuck;
		nexthdr = ext->nexthdr;
		off += size;
		if (frag & IP6_OFFSET) {
			ev->ipproto = nexthdr;
			return -1;  /* a later fragment: no transport header */
		}
	}
	/* IPV6_EXT_MAX headers walked: whatever comes next is the protocol. */
	if (ext_steps[nexthdr])
		goto stuck;
done:
	c->pos = start + off;
	ev->ipproto = nexthdr;
	return nexthdr;
stuck:
	ev->ipproto = nexthdr;
	return -1;
}

static __always_inline void parse_tcphdr(struct cursor *c, struct nm_event *ev)
{
	struct tcphdr *th = c->pos;

	if ((void *)(th + 1) > c->end)
		return;
	th = at(c, th);
	ev->sport = bpf_ntohs(th->source);
	ev->dport = bpf_ntohs(th->dest);
	/* The flags byte follows the 4-bit data offset and reserved bits. */
	ev->tcp_flags = ((__u8 *)th)[13];
	ev->flags |= NM_EV_PORTS | NM_EV_TCPFLAGS;
	/*
	 * Past the options too: the cursor then gives the headers' length, which
	 * counts a merged packet's wire bytes (tc: once per extra segment). A data
	 * offset under 5 words is bogus: the fixed header's 20 bytes, then.
	 */
	c->pos = (void *)th + (th->doff < 5 ? sizeof(*th) : th->doff * 4);
}

static __always_inline void parse_udphdr(struct cursor *c, struct nm_event *ev)
{
	struct udphdr *uh = c->pos;

	if ((void *)(uh + 1) > c->end)
		return;
	uh = at(c, uh);
	ev->sport = bpf_ntohs(uh->source);
	ev->dport = bpf_ntohs(uh->dest);
	ev->flags |= NM_EV_PORTS;
	c->pos = uh + 1;
}

static __always_inline void parse_sctphdr(struct cursor *c, struct nm_event *ev)
{
	struct sctp_head *sh = c->pos;

	if ((void *)(sh + 1) > c->end)
		return;
	sh = at(c, sh);
	ev->sport = bpf_ntohs(sh->source);
	ev->dport = bpf_ntohs(sh->dest);
	ev->flags |= NM_EV_PORTS;
}

/* ICMP and ICMPv6 alike: type, code and checksum lead both. */
static __always_inline void parse_icmphdr(struct cursor *c, struct nm_event *ev)
{
	struct icmp_head *ih = c->pos;

	if ((void *)(ih + 1) > c->end)
		return;
	ih = at(c, ih);
	ev->icmp_type = ih->type;
	ev->icmp_code = ih->code;
	ev->flags |= NM_EV_ICMP;
}

/* Is addr (of the event's family) inside the prefix? 32 bits at a time. */
static __always_inline bool in_prefix(const struct nm_event *ev, const __u8 *addr,
				      const volatile struct nm_prefix *p)
{
	if (ev->family != p->family)
		return false;
#pragma unroll
	for (int i = 0; i < NM_ADDR_LEN; i += 4) {
		__u32 a = *(__u32 *)(addr + i);
		__u32 n = *(const volatile __u32 *)(p->net + i);
		__u32 m = *(const volatile __u32 *)(p->mask + i);

		if ((a & m) != n)
			return false;
	}
	return true;
}

/*
 * One option's values: does any hold? ``n`` comes from .rodata, so the
 * verifier walks only the values given; the first that holds ends the walk.
 */
#define ANY_OF(n, cond)							\
	({								\
		bool _any = false;					\
		_Pragma("unroll")					\
		for (int i = 0; i < NM_ALT; i++) {			\
			if (i >= (n))					\
				break;					\
			if (cond) {					\
				_any = true;				\
				break;					\
			}						\
		}							\
		_any;							\
	})

static __always_inline bool filter_match(const struct nm_event *ev)
{
	__u16 match = cfg.match;

	if ((match & NM_M_PROTO) && !ANY_OF(cfg.n_proto, ev->ipproto == cfg.proto[i]))
		return false;
	if ((match & NM_M_VLAN) && !ANY_OF(cfg.n_vlan, ev->vlan == cfg.vlan[i]))
		return false;
	if ((match & NM_M_SADDR) && !ANY_OF(cfg.n_src, in_prefix(ev, ev->saddr, &cfg.src[i])))
		return false;
	if ((match & NM_M_DADDR) && !ANY_OF(cfg.n_dst, in_prefix(ev, ev->daddr, &cfg.dst[i])))
		return false;
	if ((match & NM_M_HOST) &&
	    !ANY_OF(cfg.n_host, in_prefix(ev, ev->saddr, &cfg.host[i]) ||
			       in_prefix(ev, ev->daddr, &cfg.host[i])))
		return false;
	if ((match & (NM_M_SPORT | NM_M_DPORT | NM_M_PORT)) && !(ev->flags & NM_EV_PORTS))
		return false;
	if ((match & NM_M_SPORT) && !ANY_OF(cfg.n_sport, ev->sport == cfg.sport[i]))
		return false;
	if ((match & NM_M_DPORT) && !ANY_OF(cfg.n_dport, ev->dport == cfg.dport[i]))
		return false;
	if ((match & NM_M_PORT) &&
	    !ANY_OF(cfg.n_port, ev->sport == cfg.port[i] || ev->dport == cfg.port[i]))
		return false;
	return true;
}

/*
 * The frame's length on the wire: live, the whole frame, with the fragments of a
 * multi-buffer frame where the kernel knows them; under -r, the file's.
 */
static __always_inline __u32 xdp_frame_len(struct xdp_md *ctx)
{
	if (cfg.replay) {
		__u32 key = 0;
		__u32 *len = bpf_map_lookup_elem(&wirelen, &key);

		if (len && *len)
			return *len;
	}
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_xdp_get_buff_len))
		return bpf_xdp_get_buff_len(ctx);
	return ctx->data_end - ctx->data;
}

/* One record into the perf buffer, counted sent or failed (a full ring). */
static __always_inline int send_record(void *ctx, void *rec, __u64 size,
				       struct nm_counters *cnt)
{
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, rec, size) < 0) {
		count(cnt, NM_CNT_SEND_FAILED);
		return -1;
	}
	count(cnt, NM_CNT_SENT);
	return 0;
}

/*
 * Kept out of line (a BPF-to-BPF call) so that the object's BTF describes
 * struct nm_event, through this function's prototype: netmon checks its
 * Python mirror against that size before it reads any event. Inlined, the
 * struct would appear only as stack bytes, and the check would have nothing
 * to hold it to.
 */
static __noinline int send_event(void *ctx, struct nm_event *ev, struct nm_counters *cnt)
{
	return send_record(ctx, ev, sizeof(*ev), cnt);
}

/* Capture: how many of the packet's bytes its record keeps. */
static __always_inline __u32 cap_len(const struct nm_event *ev)
{
	__u32 caplen = ev->len < cfg.snaplen ? ev->len : cfg.snaplen;

	return caplen < NM_MAX_SNAPLEN ? caplen : NM_MAX_SNAPLEN;
}

/*
 * A word into the record being built. The mask keeps every offset inside the
 * buffer in a way the verifier follows whatever the compiler makes of the
 * arithmetic before it (the buffer has slack past NM_CAP_RAW_MAX for it).
 */
static __always_inline void put32(struct nm_scratch *s, __u32 at, __u32 value)
{
	*(__u32 *)(s->raw + (at & (NM_CAP_RAW_MAX - 1))) = value;
}

/* Capture: where the record's EPB starts in its raw data, after the event if any. */
static __always_inline __u32 cap_epb_at(void)
{
	return (cfg.cap_events ? sizeof(struct nm_event) : 0) + 4;
}

/*
 * Capture: the length to copy, in a form whose bounds (1 .. 65536) the
 * verifier sees whatever the compiler does to the checks before it; for the
 * caplen of cap_len(), never 0, it is caplen itself.
 */
static __always_inline __u32 cap_copy_len(__u32 caplen)
{
	return ((caplen - 1) & 0xFFFF) + 1;
}

/*
 * Capture, before the packet's bytes are copied in at cap_epb_at() +
 * NM_EPB_HEAD: the zeros that pad them to 4 bytes go in first, the copy then
 * overwrites what of them is packet. Returns the builder, or NULL.
 */
static __always_inline struct nm_scratch *cap_begin(__u32 caplen)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct nm_scratch *s = bpf_map_lookup_elem(&scratch, &cpu);

	if (s)
		put32(s, cap_epb_at() + NM_EPB_HEAD + (caplen & ~3), 0);
	return s;
}

/*
 * Capture, once the packet's cap_len() bytes sit in s->raw after the EPB's
 * head: the event (if records carry it), the EPB around the bytes, the tail,
 * and out. The record's layout is in xdp_monitor.h.
 */
static __noinline int send_capture(void *ctx, struct nm_event *ev, struct nm_counters *cnt,
				   struct nm_scratch *s, __u32 slot)
{
	__u32 caplen = cap_len(ev);
	__u32 padded = (caplen + 3) & ~3;
	__u32 epb = NM_EPB_HEAD + padded + NM_EPB_OPTS;
	__u32 at = cap_epb_at();
	__u32 gap = NM_CAP_TAIL + 12 + at;
	__u32 opts = at + NM_EPB_HEAD + padded;
	__u32 end = at + epb;
	__u32 seq = s->seq + 1;
	__u64 ts = ev->ts_ns + cfg.epoch_ns;
	union { __u16 half[2]; __u32 word; } flags_opt = { .half = { NM_EPB_FLAGS, 4 } };

	if (padded > NM_MAX_SNAPLEN)
		return -1;
	if (cfg.cap_events)
		__builtin_memcpy(s->raw, ev, sizeof(*ev));
	put32(s, at - 4, gap);
	put32(s, at, NM_EPB_TYPE);
	put32(s, at + 4, epb);
	put32(s, at + 8, slot);
	put32(s, at + 12, ts >> 32);
	put32(s, at + 16, (__u32)ts);
	put32(s, at + 20, caplen);
	put32(s, at + 24, ev->len);
	/* Options: epb_flags (code 2, length 4: the direction), end of options (0). */
	put32(s, opts, flags_opt.word);
	put32(s, opts + 4, ev->dir == NM_DIR_OUT ? NM_EPB_OUT : NM_EPB_IN);
	put32(s, opts + 8, 0);
	put32(s, opts + 12, epb);
	if (epb & 4) {  /* the record would not be a multiple of 8: a pad block */
		put32(s, end, NM_CAP_BLOCK);
		put32(s, end + 4, NM_CAP_PAD);
		put32(s, end + 8, NM_CAP_PAD);
		end += NM_CAP_PAD;
	}
	put32(s, end, NM_CAP_BLOCK);
	put32(s, end + 4, gap);
	put32(s, end + 8, seq);
	put32(s, end + 12, s->failed);
	end += NM_CAP_TAIL;
	if (end > NM_CAP_RAW_MAX)
		return -1;
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, s->raw, end) < 0) {
		s->failed += 1;
		count(cnt, NM_CNT_SEND_FAILED);
		return -1;
	}
	s->seq = seq;
	count(cnt, NM_CNT_SENT);
	return 0;
}

/* Flows: the packet's TCP flags into the flow's (see struct nm_flow). */
static __always_inline void or_flags(__u8 *seen, __u8 flags)
{
#pragma unroll
	for (int i = 0; i < 8; i++)
		if ((flags & (1 << i)) && !seen[i])
			seen[i] = 1;
}

/*
 * Flows: the time a flow is made. A tick's resolution is plenty, and costs less than
 * ktime_get_ns(). Read when a flow enters a table only, not per packet: a helper call
 * is a call and a return, which SRSO's mitigation makes dear (README: Flows).
 */
static __always_inline __u64 flow_clock(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_coarse_ns))
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/* Flows: the packet's flow in the table netmon is not reading. */
static __always_inline void flow_add(void *table, const void *key,
				     __u64 packets, __u64 bytes, __u64 flags,
				     struct nm_counters *cnt)
{
	struct nm_flow *f = bpf_map_lookup_elem(table, key);

	if (!f) {
		__u64 now = flow_clock();
		struct nm_flow init = {
			.packets = packets, .bytes = bytes, .first_ns = now, .last_ns = now,
		};
		long err;

		or_flags(init.tcp_flags, flags);
		err = bpf_map_update_elem(table, key, &init, BPF_NOEXIST);
		if (err == 0)
			return;
		/* Another CPU made the entry first: add to it. Else the table is full. */
		if (err == -NM_EEXIST)
			f = bpf_map_lookup_elem(table, key);
		if (!f) {
			if (cnt) {
				cnt->n[NM_CNT_FLOW_OVERFLOW] += packets;
				cnt->n[NM_CNT_FLOW_OVERFLOW_BYTES] += bytes;
			}
			return;
		}
	}
#ifdef NM_FLOWS_PERCPU
	f->packets += packets;
	f->bytes += bytes;
#else
	__sync_fetch_and_add(&f->packets, packets);
	__sync_fetch_and_add(&f->bytes, bytes);
#endif
	/* A packet came after the one that made the entry: netmon stamps it with the time
	 * it took the table (see struct nm_flow). */
	f->last_ns = 0;
	or_flags(f->tcp_flags, flags);
}

/* A matched packet's count and bytes by protocol (what --metrics serves). */
static __always_inline void count_proto(struct nm_counters *cnt, __u64 segs, __u64 bytes,
					__u8 ipproto)
{
	__u32 i;

	switch (ipproto) {
	case IPPROTO_TCP: i = NM_PROTO_TCP; break;
	case IPPROTO_UDP: i = NM_PROTO_UDP; break;
	case IPPROTO_SCTP: i = NM_PROTO_SCTP; break;
	case IPPROTO_ICMP: i = NM_PROTO_ICMP; break;
	case IPPROTO_ICMPV6: i = NM_PROTO_ICMPV6; break;
	default: i = NM_PROTO_OTHER;
	}
	if (cnt) {
		cnt->n[NM_CNT_PROTO_PACKETS + i] += segs;
		cnt->n[NM_CNT_PROTO_BYTES + i] += bytes;
	}
}

/*
 * Flows: count the packet, ``bytes`` of IP (IPFIX's octetDeltaCount: IP headers
 * and payload, a merged packet's once per segment). ev has no time stamp: the
 * flow takes its own.
 */
static __always_inline int count_flow(struct nm_event *ev, struct nm_counters *cnt, __u64 bytes)
{
	__u32 zero = 0, *side = bpf_map_lookup_elem(&flowside, &zero);
	__u64 segs = ev->segs > 1 ? ev->segs : 1;
	__u16 sport = 0, dport = 0;
	bool one = side && *side;

	if (ev->flags & NM_EV_PORTS) {
		sport = ev->sport;
		dport = ev->dport;
	} else if (ev->flags & NM_EV_ICMP) {
		sport = ev->icmp_type;
		dport = ev->icmp_code;
	}
	if (ev->family == 4) {
		struct nm_flow_key4 key = {
			.ifindex = ev->ifindex, .dir = ev->dir, .family = 4,
			.ipproto = ev->ipproto, .vlan = ev->vlan, .sport = sport, .dport = dport,
		};

		__builtin_memcpy(key.saddr, ev->saddr, 4);
		__builtin_memcpy(key.daddr, ev->daddr, 4);
		/* A call per table: the verifier inlines a lookup whose map is one constant. */
		if (one)
			flow_add(&flows4_1, &key, segs, bytes, ev->tcp_flags, cnt);
		else
			flow_add(&flows4_0, &key, segs, bytes, ev->tcp_flags, cnt);
	} else {
		struct nm_flow_key key = {
			.ifindex = ev->ifindex, .dir = ev->dir, .family = ev->family,
			.ipproto = ev->ipproto, .vlan = ev->vlan, .sport = sport, .dport = dport,
		};

		__builtin_memcpy(key.saddr, ev->saddr, NM_ADDR_LEN);
		__builtin_memcpy(key.daddr, ev->daddr, NM_ADDR_LEN);
		if (one)
			flow_add(&flows1, &key, segs, bytes, ev->tcp_flags, cnt);
		else
			flow_add(&flows0, &key, segs, bytes, ev->tcp_flags, cnt);
	}
	return 0;
}

/*
 * tc, capture: the frame's first caplen bytes as they were on the wire, with
 * the outer tag the kernel took into the skb's metadata back after the MAC
 * addresses (as libpcap puts it back in what it hands out).
 */
static __always_inline long skb_load_tagged(struct __sk_buff *skb, __u8 *dst, __u32 caplen)
{
	__u8 tag[VLAN_TAG_LEN];
	__u32 first, rest;
	long err;

	*(__u16 *)tag = skb->vlan_proto;  /* kept in network order */
	*(__u16 *)(tag + 2) = bpf_htons(meta_tag(skb));
	/* Through barrier_var() so the compiler keeps cap_copy_len()'s bounds: see it. */
	first = caplen < ETH_ADDRS_LEN ? caplen : ETH_ADDRS_LEN;
	barrier_var(first);
	err = bpf_skb_load_bytes(skb, 0, dst, cap_copy_len(first));
	if (err || caplen <= ETH_ADDRS_LEN)
		return err;
#pragma unroll
	for (int i = 0; i < VLAN_TAG_LEN; i++)
		if (ETH_ADDRS_LEN + i < caplen)  /* a snaplen may end inside the tag */
			dst[ETH_ADDRS_LEN + i] = tag[i];
	if (caplen <= ETH_ADDRS_LEN + VLAN_TAG_LEN)
		return 0;
	rest = caplen - ETH_ADDRS_LEN - VLAN_TAG_LEN;
	barrier_var(rest);
	return bpf_skb_load_bytes(skb, ETH_ADDRS_LEN, dst + ETH_ADDRS_LEN + VLAN_TAG_LEN,
				  cap_copy_len(rest));
}

/*
 * Capture: copy the packet's bytes in and send its record. At XDP,
 * bpf_xdp_load_bytes() reads every buffer of the frame (>= 5.18; netmon
 * captures with tc where it is missing); at tc, bpf_skb_load_bytes() reads the
 * linear part and the fragments. ``xdp`` is a constant at each call: the
 * other hook's helper is compiled out.
 */
static __always_inline void capture(void *ctx, struct nm_event *ev, struct nm_counters *cnt,
				    __u32 slot, bool xdp)
{
	__u32 caplen = cap_len(ev);
	struct nm_scratch *s;
	__u8 *dst;
	long err = -1;

	if (xdp && !bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_xdp_load_bytes))
		goto failed;
	s = cap_begin(caplen);
	if (!s)
		goto failed;
	dst = s->raw + cap_epb_at() + NM_EPB_HEAD;
	if (xdp)
		err = bpf_xdp_load_bytes(ctx, 0, dst, cap_copy_len(caplen));
	else if (meta_tag(ctx) < 0)
		err = bpf_skb_load_bytes(ctx, 0, dst, cap_copy_len(caplen));
	else
		err = skb_load_tagged(ctx, dst, caplen);
	if (err == 0) {
		send_capture(ctx, ev, cnt, s, slot);
		return;
	}
failed:
	count(cnt, NM_CNT_COPY_FAILED);
}

/*
 * The filter expression's place (issue 18). As libbpf loads the program, netmon
 * puts the expression, translated from libpcap's classic BPF
 * (netmon/expression/translate.py), in place of the call to this function, which it
 * then drops (netmon/kernel/splice.py); it is called only when cfg.expr says so. As
 * compiled it matches every frame. Returns 1 for a match, 0 for none.
 */
/*
 * The expression keeps r6-r9 for its caller (it saves them in the frame and gives them
 * back), and the verifier refuses to save a register nothing was written to yet: a
 * hook with an expression writes them first. Nothing lives in them at a hook's start;
 * the clobbers tell the compiler so.
 */
#define EXPR_REGS_WRITTEN()						\
	do {								\
		if (cfg.expr)						\
			asm volatile("r6 = 0\n\tr7 = 0\n\tr8 = 0\n\tr9 = 0"	\
				     ::: "r6", "r7", "r8", "r9");		\
	} while (0)

static __noinline int nm_expr(void *ctx, void *data, void *data_end, struct nm_expr_frame *frame)
{
	volatile int match = 1;  /* volatile: the compiler must not fold the call away */

	/* Every argument kept: the compiler drops a static function's unused ones. */
	asm volatile("" : : "r"(ctx), "r"(data), "r"(data_end), "r"(frame));
	return match;
}

/* What inspect() found: nothing to deliver, a matched IP packet, or a frame only an
 * expression matched that carries no IP packet (-w writes it; nothing else shows it). */
enum nm_found { NM_NONE, NM_IP, NM_OTHER };

/* A frame that is not a parsable IP packet: the expression's, if it matched alone. */
static __always_inline int not_ip(struct nm_counters *cnt, enum nm_counter why)
{
	count(cnt, why);
	if (cfg.expr && !cfg.match) {
		count(cnt, NM_CNT_EXPR_OTHER);
		return NM_OTHER;
	}
	return NM_NONE;
}

/*
 * Everything a hook does, once: the expression, parse, filter, count, fill the
 * event. Returns NM_IP when the packet matched and the event waits for its
 * length and send (see enum nm_found).
 */
static __always_inline int inspect(void *ctx, struct cursor *c, struct nm_event *ev,
				   struct nm_counters *cnt, __u32 *l2len, int tag,
				   struct nm_expr_frame *frame)
{
	void *start = c->pos;
	__u32 l2;
	int proto;

	count(cnt, NM_CNT_SEEN);
	if (cfg.expr && !nm_expr(ctx, c->pos, c->end, frame))
		return NM_NONE;

	proto = parse_ethhdr(c, &ev->vlan, tag);
	l2 = c->pos - start;
	/* A number from here on: else the compiler's algebra with it subtracts a packet
	 * pointer from a number, which the verifier refuses. */
	barrier_var(l2);
	*l2len = l2 + (tag >= 0 ? VLAN_TAG_LEN : 0);
	if (proto == bpf_htons(ETH_P_IP))
		proto = parse_iphdr(c, ev);
	else if (proto == bpf_htons(ETH_P_IPV6))
		proto = parse_ipv6hdr(c, ev);
	else
		return not_ip(cnt, NM_CNT_NON_IP);
	if (!ev->family)
		return not_ip(cnt, NM_CNT_MALFORMED);
	if (cfg.tcp && proto >= 0) {  /* where TCP health finds the headers again */
		__u32 l4 = c->pos - start;

		barrier_var(l4);
		c->l3 = l2;
		c->l4 = l4;
	}

	switch (proto) {
	case IPPROTO_TCP:
		parse_tcphdr(c, ev);
		break;
	case IPPROTO_UDP:
		parse_udphdr(c, ev);
		break;
	case IPPROTO_SCTP:
		parse_sctphdr(c, ev);
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		parse_icmphdr(c, ev);
		break;
	}

	if (!filter_match(ev))
		return NM_NONE;
	count(cnt, NM_CNT_MATCHED);
	return NM_IP;
}

/* -- TCP health (netmon rtt; xdp_monitor.h says what is measured) ---------------- */

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define ICMP_ECHOREPLY     0
#define ICMP_ECHO          8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY   129
/* An outstanding sample older than this is given up (counted unmatched). */
#define NM_RTT_GIVE_UP_NS (10ULL * 1000 * 1000 * 1000)
#define NM_ECHO_GIVE_UP_NS (1000ULL * 1000 * 1000)  /* an ICMP echo's: ping's interval */

/* Where tcp_lookup() builds a key in hdrbuf: past tcp_record()'s sample. */
#define NM_TCP_KEY_AT 128
_Static_assert(sizeof(struct nm_tcp_sample) <= NM_TCP_KEY_AT &&
	       NM_TCP_KEY_AT + sizeof(struct nm_tcp_key) <= sizeof(struct nm_hdrbuf),
	       "a sample and a key side by side in hdrbuf");

/* A new connection's state (its own section: .rodata is struct nm_config alone). */
const volatile struct nm_tcp_state tcp_zero SEC(".rodata.tcp") = {};

/* Sequence numbers and timestamps wrap: a before b in serial number arithmetic. */
static __always_inline bool before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

/* The bucket of an RTT (struct nm_rtt_hist): 4 to a power of two from 1024 ns. */
static __always_inline __u32 rtt_bucket(__u64 v)
{
	__u64 x = v;
	__u32 k = 0, b;

	if (v < 1024)
		return 0;
	if (x >> 32) { k += 32; x >>= 32; }
	if (x >> 16) { k += 16; x >>= 16; }
	if (x >> 8) { k += 8; x >>= 8; }
	if (x >> 4) { k += 4; x >>= 4; }
	if (x >> 2) { k += 2; x >>= 2; }
	if (x >> 1) { k += 1; }
	b = (k - 10) * 4 + ((v >> (k - 2)) & 3) + 1;
	return b < NM_RTT_BUCKETS ? b : NM_RTT_BUCKETS - 1;
}

/* Out of line, as send_event(): so that the object's BTF describes struct nm_tcp_sample. */
static __noinline int send_tcp(void *ctx, struct nm_tcp_sample *t, struct nm_counters *cnt)
{
	return send_record(ctx, t, sizeof(*t), cnt);
}

/* A sample's or retransmission's record: the event as the packet's, or (swap) as the
 * packet's it answers, which went the other way. */
static __always_inline void tcp_record(void *ctx, const struct nm_event *ev,
				       struct nm_counters *cnt, bool swap, __u8 kind,
				       __u64 rtt, __u32 seq, __u64 now)
{
	/* Built in the per-CPU buffer netmon drops copies headers to (a run has one or the
	 * other): the hooks' stack is near its 512 bytes. */
	__u32 zero = 0;
	struct nm_tcp_sample *t = bpf_map_lookup_elem(&hdrbuf, &zero);

	_Static_assert(sizeof(*t) <= sizeof(struct nm_hdrbuf), "a sample fits in hdrbuf");
	if (!t)
		return;
	t->ev = *ev;
	t->rtt_ns = rtt;
	t->seq = seq;
	t->kind = kind;
	t->ev.ts_ns = now;
	if (swap) {
		__builtin_memcpy(t->ev.saddr, ev->daddr, NM_ADDR_LEN);
		__builtin_memcpy(t->ev.daddr, ev->saddr, NM_ADDR_LEN);
		t->ev.sport = ev->dport;
		t->ev.dport = ev->sport;
		t->ev.dir = ev->dir ^ 1;
		t->ev.tcp_flags = 0;
		t->ev.flags &= ~NM_EV_TCPFLAGS;
	}
	send_tcp(ctx, t, cnt);
}

/* A round trip measured: into the histogram of the direction its first packet went. */
static __always_inline void rtt_sample(void *ctx, const struct nm_event *ev, __u32 slot,
				       struct nm_tcp_half *from, __u64 now)
{
	__u32 key = slot * 2 + (ev->dir ^ 1);
	__u64 rtt = now - from->pend_ns;
	struct nm_rtt_hist *h = bpf_map_lookup_elem(&rtthist, &key);
	__u8 kind = from->pend_kind;

	from->pend_kind = 0;
	if (h) {
		__u32 b = rtt_bucket(rtt);

		__sync_fetch_and_add(&h->count, 1);
		__sync_fetch_and_add(&h->sum_ns, rtt);
		barrier_var(b);  /* the mask changes nothing; the verifier sees the bound by it */
		__sync_fetch_and_add(&h->n[b & (NM_RTT_BUCKETS - 1)], 1);
	}
	count(counters_at(slot, ev->dir ^ 1), NM_CNT_RTT_SAMPLES);
	if (cfg.tcp & NM_TCP_EVENTS)
		tcp_record(ctx, ev, counters_at(slot, ev->dir ^ 1), true, kind, rtt, 0, now);
}

/* A sample starts at this packet (what the echo will carry: val), unless one is
 * outstanding this way, or the last started less than rtt_gap_us ago. A SYN's
 * (force) replaces an outstanding one: a SYN sent again starts the handshake anew. */
static __always_inline void rtt_start(struct nm_tcp_half *me, __u8 kind, __u32 val,
				      bool force, struct nm_counters *cnt)
{
	__u64 now = bpf_ktime_get_ns();

	if (me->pend_kind) {
		if (!force && now - me->pend_ns < NM_RTT_GIVE_UP_NS)
			return;
		count(cnt, NM_CNT_RTT_UNMATCHED);
		me->pend_kind = 0;
	}
	if (!force && now - me->last_ns < (__u64)cfg.rtt_gap_us * 1000)
		return;
	me->pend_kind = kind;
	me->pend_val = val;
	me->pend_ns = now;
	me->last_ns = now;
}

/*
 * Retransmissions: a data segment [seq, end) below the highest sequence number this
 * way has seen is a retransmission, unless it falls in the one gap remembered (then it
 * came out of order, and fills it).
 */
static __always_inline void tcp_seq(void *ctx, const struct nm_event *ev,
				    struct nm_counters *cnt, struct nm_tcp_half *me,
				    __u32 seq, __u32 len)
{
	__u32 end = seq + len, segs = ev->segs > 1 ? ev->segs : 1;
	__u8 kind = 0;

	if (cnt)
		cnt->n[NM_CNT_TCP_DATA] += segs;
	if (!me->seq_known) {
		me->seq_known = 1;
		me->nxt = end;
		return;
	}
	if (!before(seq, me->nxt)) {
		if (seq != me->nxt) {  /* a gap: what lies between was not seen (yet) */
			me->hole = 1;
			me->hole_lo = me->nxt;
			me->hole_hi = seq;
		}
		me->nxt = end;
		return;
	}
	if (me->hole && !before(seq, me->hole_lo) && before(seq, me->hole_hi)) {
		kind = NM_TK_REORDER;
		if (!before(end, me->hole_hi)) {
			if (seq == me->hole_lo)
				me->hole = 0;
			else
				me->hole_hi = seq;
		} else if (seq == me->hole_lo) {
			me->hole_lo = end;
		} else {
			me->hole_hi = seq;  /* inside it: the part above is forgotten */
		}
	} else {
		kind = NM_TK_RETRANS;
	}
	if (before(me->nxt, end))
		me->nxt = end;
	if (cnt)
		cnt->n[kind == NM_TK_RETRANS ? NM_CNT_TCP_RETRANS : NM_CNT_TCP_REORDER] += segs;
	if (cfg.tcp & NM_TCP_EVENTS)
		tcp_record(ctx, ev, cnt, false, kind, 0, seq, bpf_ktime_get_ns());
}

/*
 * The connection's key (both ways the same) and which half is this packet's way: the
 * endpoint with the lower (address, port) first. ``width``: the addresses' bytes, 4 or
 * 16 (a key's own size). Branches, not key->addr[h]: the verifier refuses arithmetic
 * beyond adding on a stack pointer, and the compiler makes an OR of that index.
 */
static __always_inline __u32 source_is_higher(const struct nm_event *ev, __u16 sport,
					      __u16 dport, int width)
{
#pragma unroll
	for (int i = 0; i < NM_ADDR_LEN; i += 4) {
		__u32 a, b;

		if (i >= width)
			break;
		a = bpf_ntohl(*(__u32 *)(ev->saddr + i));
		b = bpf_ntohl(*(__u32 *)(ev->daddr + i));
		if (a != b)
			return a > b;
	}
	return sport > dport;
}

#define TCP_KEY(ev, key, sport, dport, width)					\
	({									\
		__u32 _h = source_is_higher((ev), (sport), (dport), (width));	\
		(key)->ifindex = (ev)->ifindex;					\
		(key)->vlan = (ev)->vlan;					\
		(key)->family = (ev)->family;					\
		(key)->ipproto = (ev)->ipproto;					\
		if (_h) {							\
			(key)->port[0] = (dport);				\
			(key)->port[1] = (sport);				\
			__builtin_memcpy((key)->addr[0], (ev)->daddr, (width));	\
			__builtin_memcpy((key)->addr[1], (ev)->saddr, (width));	\
		} else {							\
			(key)->port[0] = (sport);				\
			(key)->port[1] = (dport);				\
			__builtin_memcpy((key)->addr[0], (ev)->saddr, (width));	\
			__builtin_memcpy((key)->addr[1], (ev)->daddr, (width));	\
		}								\
		_h;								\
	})

/* The connection's state in ``table``, made if new (counted where it has no room). */
static __always_inline struct nm_tcp_state *tcp_state(void *table, const void *key,
						      struct nm_counters *cnt)
{
	struct nm_tcp_state *st = bpf_map_lookup_elem(table, key);
	__u32 zero = 0, *gen;

	if (!st) {
		/* From a zeroed global, not the stack: the hooks' stack is near its limit. */
		if (bpf_map_update_elem(table, key, (void *)&tcp_zero, BPF_NOEXIST) &&
		    !bpf_map_lookup_elem(table, key)) {
			count(cnt, NM_CNT_TCP_NOROOM);
			return NULL;
		}
		st = bpf_map_lookup_elem(table, key);
		if (!st)
			return NULL;
	}
	gen = bpf_map_lookup_elem(&tcpgen, &zero);
	if (gen && st->gen != *gen)
		st->gen = *gen;
	return st;
}

/* The connection's state (IPv4's in their own table), and which half is this way's. */
static __always_inline struct nm_tcp_state *tcp_lookup(const struct nm_event *ev,
						       __u16 sport, __u16 dport,
						       struct nm_counters *cnt, __u32 *half)
{
	/* The key is built in the per-CPU buffer (past where tcp_record() builds records):
	 * the hooks' stack is near its 512 bytes. */
	__u32 zero = 0;
	struct nm_hdrbuf *hb = bpf_map_lookup_elem(&hdrbuf, &zero);

	if (!hb)
		return NULL;
	if (ev->family == 4) {
		struct nm_tcp_key4 *key = (void *)(hb->bytes + NM_TCP_KEY_AT);

		*key = (struct nm_tcp_key4){};
		*half = TCP_KEY(ev, key, sport, dport, 4);
		return tcp_state(&tcpstate4, key, cnt);
	} else {
		struct nm_tcp_key *key = (void *)(hb->bytes + NM_TCP_KEY_AT);

		*key = (struct nm_tcp_key){};
		*half = TCP_KEY(ev, key, sport, dport, NM_ADDR_LEN);
		return tcp_state(&tcpstate, key, cnt);
	}
}

/* What a TCP header says: its sequence and ack numbers, and its timestamps where the
 * options hold them as every stack sends them past the SYN (NOP, NOP, TS; or TS first). */
struct tcp_seen {
	__u32 seq, ack, tsval, tsecr, hdr;
	__u8 flags, ts;
};

static __always_inline bool tcp_read(const struct tcp_at *c, struct tcp_seen *t)
{
	struct tcphdr *th = c->l4;
	__u8 *opt;
	__u32 w;

	if (!th || (void *)(th + 1) > c->end)
		return false;
	t->seq = bpf_ntohl(th->seq);
	t->ack = bpf_ntohl(th->ack_seq);
	t->flags = ((__u8 *)th)[13];
	t->hdr = th->doff * 4;
	t->ts = 0;
	if (th->doff < 8)  /* no room for a timestamp option after two NOPs */
		return true;
	opt = (__u8 *)(th + 1);
	if ((void *)(opt + 12) > c->end)
		return true;
	w = bpf_ntohl(*(__u32 *)opt);
	if (w == 0x0101080a) {
		t->tsval = bpf_ntohl(*(__u32 *)(opt + 4));
		t->tsecr = bpf_ntohl(*(__u32 *)(opt + 8));
		t->ts = 1;
	} else if (w >> 16 == 0x080a) {
		t->tsval = (w & 0xffff) << 16 | bpf_ntohs(*(__u16 *)(opt + 4));
		t->tsecr = bpf_ntohl(*(__u32 *)(opt + 6));
		t->ts = 1;
	}
	return true;
}

static __always_inline void tcp_health_tcp(void *ctx, const struct tcp_at *c,
					   struct nm_event *ev, struct nm_counters *cnt,
					   __u32 slot, __u32 l2len)
{
	struct nm_tcp_state *st;
	struct nm_tcp_half *me, *peer;
	struct tcp_seen t;
	__u32 h, iplen, head, len = 0;

	if (!tcp_read(c, &t))
		return;
	st = tcp_lookup(ev, ev->sport, ev->dport, cnt, &h);
	if (!st)
		return;
	me = &st->half[h & 1];
	peer = &st->half[(h & 1) ^ 1];

	/* The payload's length: the IP header's length less the headers (a GSO packet
	 * over 64 KiB has none: the frame's then; padding makes a short frame no longer). */
	iplen = c->iplen ? c->iplen : ev->len - l2len;
	head = (__u32)(c->l4 - c->l3) + t.hdr;
	if (iplen > head)
		len = iplen - head;

	/* The end of a sample the other way: this packet echoes it. */
	if (peer->pend_kind == NM_TK_RTT_TS && t.ts && (t.flags & TCP_ACK)) {
		if (t.tsecr == peer->pend_val)
			rtt_sample(ctx, ev, slot, peer, bpf_ktime_get_ns());
		else if (before(peer->pend_val, t.tsecr)) {  /* a later one echoed: no answer */
			peer->pend_kind = 0;
			count(counters_at(slot, ev->dir ^ 1), NM_CNT_RTT_UNMATCHED);
		}
	} else if (peer->pend_kind == NM_TK_RTT_SYN && (t.flags & TCP_ACK) &&
		   t.ack == peer->pend_val && !(t.flags & TCP_RST)) {
		rtt_sample(ctx, ev, slot, peer, bpf_ktime_get_ns());
	}

	/* The start of one this way. */
	if (t.flags & TCP_SYN) {
		me->seq_known = 1;  /* a connection (anew): the sequence starts here */
		me->nxt = t.seq + 1;
		me->hole = 0;
		rtt_start(me, NM_TK_RTT_SYN, t.seq + 1, true, counters_at(slot, ev->dir));
		return;
	}
	if (t.ts && (!me->ts_known || t.tsval != me->ts_last)) {
		me->ts_known = 1;
		me->ts_last = t.tsval;
		/* A pure ACK is not answered at once (the other side may wait for data to
		 * send): only segments with data or a FIN start a sample, as in ePPing. */
		if (len || (t.flags & TCP_FIN))
			rtt_start(me, NM_TK_RTT_TS, t.tsval, false, counters_at(slot, ev->dir));
	}
	if (len)
		tcp_seq(ctx, ev, cnt, me, t.seq, len);
}

/* ICMP and ICMPv6 echo: a request starts a sample, its reply (same id and sequence
 * number, the other way) ends it. */
static __always_inline void tcp_health_icmp(void *ctx, const struct tcp_at *c,
					    struct nm_event *ev, struct nm_counters *cnt,
					    __u32 slot)
{
	struct nm_tcp_state *st;
	__u8 *ih = c->l4;
	bool request, reply;
	__u16 id, seq;
	__u32 h;

	if (!ih || (void *)(ih + 8) > c->end)
		return;
	if (ev->ipproto == IPPROTO_ICMP) {
		request = ih[0] == ICMP_ECHO;
		reply = ih[0] == ICMP_ECHOREPLY;
	} else {
		request = ih[0] == ICMPV6_ECHO_REQUEST;
		reply = ih[0] == ICMPV6_ECHO_REPLY;
	}
	if (!request && !reply)
		return;
	id = bpf_ntohs(*(__u16 *)(ih + 4));
	seq = bpf_ntohs(*(__u16 *)(ih + 6));
	st = tcp_lookup(ev, id, id, cnt, &h);
	if (!st)
		return;
	if (request) {
		struct nm_tcp_half *me = &st->half[h & 1];

		/* A request whose reply did not come within a second (ping's interval) is
		 * given up at the next one: a lost reply holds no later sample back. */
		if (me->pend_kind == NM_TK_RTT_ICMP &&
		    bpf_ktime_get_ns() - me->pend_ns >= NM_ECHO_GIVE_UP_NS) {
			me->pend_kind = 0;
			count(counters_at(slot, ev->dir), NM_CNT_RTT_UNMATCHED);
		}
		rtt_start(me, NM_TK_RTT_ICMP, seq, false, counters_at(slot, ev->dir));
	} else {
		struct nm_tcp_half *peer = &st->half[(h & 1) ^ 1];

		if (peer->pend_kind == NM_TK_RTT_ICMP && peer->pend_val == seq)
			rtt_sample(ctx, ev, slot, peer, bpf_ktime_get_ns());
	}
}

/* The hooks' input to TCP health (struct nm_tcp_in), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nm_tcp_in);
} tcpin SEC(".maps");

/* The furthest a header may start for TCP health (IPv6's extension headers may be long). */
#define NM_TCP_OFF_MAX 0xFFF

/* TCP health for the packet tcpin describes, its headers found again from ``data``. */
static __always_inline void tcp_health(void *ctx, void *data, void *data_end)
{
	__u32 zero = 0;
	struct nm_tcp_in *in = bpf_map_lookup_elem(&tcpin, &zero);
	struct tcp_at c = { .end = data_end };
	__u32 l3, l4;

	if (!in)
		return;
	l3 = in->l3;
	l4 = in->l4;
	if (l3 > NM_TCP_OFF_MAX || l4 > NM_TCP_OFF_MAX)
		return;
	c.l3 = data + l3;
	c.l4 = data + l4;
	c.iplen = in->iplen;
	if (in->ev.ipproto == IPPROTO_TCP)
		tcp_health_tcp(ctx, &c, &in->ev, counters_at(in->slot, in->ev.dir), in->slot,
			       in->l2len);
	else
		tcp_health_icmp(ctx, &c, &in->ev, counters_at(in->slot, in->ev.dir), in->slot);
}

/*
 * TCP health's own programs, reached by a tail call at the very end of a hook (see
 * deliver()): each is verified once on its own, not once per path through the hook's
 * parser (inlined, it took Linux 6.1's verifier past its million instructions), and
 * runs on a stack of its own (the hooks' is near its 512 bytes). They return what the
 * hook would have: the packet goes on.
 */
/* One table per kind of hook: a program array takes the type of the first program
 * that uses it, and refuses the others (the tc hooks failed to load beside XDP's). */
struct tcp_progs {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tcpprog_xdp SEC(".maps"), tcpprog_tc SEC(".maps");

SEC("xdp")
int nm_tcp_xdp(struct xdp_md *ctx)
{
	tcp_health(ctx, (void *)(long)ctx->data, (void *)(long)ctx->data_end);
	return XDP_PASS;
}

SEC("tc")
int nm_tcp_tc(struct __sk_buff *skb)
{
	tcp_health(skb, (void *)(long)skb->data, (void *)(long)skb->data_end);
	return NM_TC_NEXT;
}

/* A matched packet TCP health measures (TCP, ICMP's echo; no later fragment): its event
 * and its headers' places into tcpin. True when it was handed over. */
static __always_inline bool tcp_hand_over(const struct cursor *c, const struct nm_event *ev,
					  __u32 slot, __u32 l2len)
{
	__u32 zero = 0;
	struct nm_tcp_in *in;

	if ((ev->flags & NM_EV_FRAG) || !c->l4 ||
	    (ev->ipproto != IPPROTO_TCP && ev->ipproto != IPPROTO_ICMP &&
	     ev->ipproto != IPPROTO_ICMPV6))
		return false;
	in = bpf_map_lookup_elem(&tcpin, &zero);
	if (!in)
		return false;
	in->ev = *ev;
	in->l3 = c->l3;
	in->l4 = c->l4;
	in->iplen = c->iplen;
	in->l2len = l2len;
	in->slot = slot;
	return true;
}

/*
 * What every hook does with a matched packet, written once: count it by
 * protocol, then count it into its flow, or send its event, or its capture
 * record, or nothing more (--quiet). ``wire``: its bytes on the wire (a merged
 * packet's headers once per segment); ``l2len``: its link-layer header's, so
 * that flows count IP bytes; ``xdp``: a constant at each call, which picks the
 * capture's copy helper; ``found``: inspect()'s answer.
 */
static __always_inline void deliver_ip(void *ctx, struct nm_event *ev,
				       struct nm_counters *cnt, __u32 slot, __u64 wire,
				       __u32 l2len, bool xdp)
{
	if (cfg.flows) {
		count_flow(ev, cnt, wire - (__u64)ev->segs * l2len);
		return;
	}
	if (cfg.quiet)
		return;
	ev->ts_ns = bpf_ktime_get_ns();
	if (!cfg.snaplen) {
		send_event(ctx, ev, cnt);
		return;
	}
	capture(ctx, ev, cnt, slot, xdp);
}

/*
 * The hooks call it last: with TCP health on, it ends in a tail call to TCP health's
 * program for the hook (the hook then returns what that program does: the packet goes
 * on either way; a failed tail call falls through to the hook's own return).
 */
static __always_inline void deliver(void *ctx, struct nm_event *ev, struct nm_counters *cnt,
				    __u32 slot, __u64 wire, __u32 l2len, bool xdp, int found,
				    const struct cursor *c)
{
	bool tcp;

	if (found == NM_OTHER) {
		/* Not IP: no line, flow or protocol for it; a capture writes it, as tcpdump's. */
		if (cfg.snaplen && !cfg.flows && !cfg.quiet) {
			ev->ts_ns = bpf_ktime_get_ns();
			capture(ctx, ev, cnt, slot, xdp);
		}
		return;
	}
	count_proto(cnt, ev->segs, wire, ev->ipproto);
	tcp = cfg.tcp && tcp_hand_over(c, ev, slot, l2len);
	deliver_ip(ctx, ev, cnt, slot, wire, l2len, xdp);
	if (tcp) {  /* a constant map at each call: the verifier knows which */
		if (xdp)
			bpf_tail_call(ctx, &tcpprog_xdp, 0);
		else
			bpf_tail_call(ctx, &tcpprog_tc, 0);
	}
}

/* The hooks: each a thin wrapper, context -> cursor -> inspect() -> deliver(). */

SEC("xdp")
int xdp_monitor(struct xdp_md *ctx)
{
	struct cursor c = { .pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end };
	__u32 slot = slot_of(ctx->ingress_ifindex);
	struct nm_counters *cnt = counters_at(slot, NM_DIR_IN);
	struct nm_event ev = {};
	struct nm_expr_frame expr;  /* its args written here; the rest is the expression's */
	__u32 l2len;
	int found;

	EXPR_REGS_WRITTEN();
	if (cfg.expr) {
		/* Only what the expression reads: the length is a helper call on kernels
		 * with multi-buffer XDP (`len`, `greater`, `less`). */
		expr.args = (struct nm_expr_args){};
		if (cfg.expr & NM_EXPR_LEN)
			expr.args.wire_len = xdp_frame_len(ctx);
		if (cfg.expr & NM_EXPR_IF)
			expr.args.ifindex = ctx->ingress_ifindex;
	}
	found = inspect(ctx, &c, &ev, cnt, &l2len, -1, &expr);
	if (found == NM_NONE)
		return XDP_PASS;
	ev.ifindex = ctx->ingress_ifindex;
	/* The expression's, if it asked: the helper once a packet. */
	ev.len = cfg.expr & NM_EXPR_LEN ? expr.args.wire_len : xdp_frame_len(ctx);
	ev.segs = 1;
	deliver(ctx, &ev, cnt, slot, ev.len, l2len, true, found, &c);
	return XDP_PASS;
}

/*
 * tc sees an skb: headers may sit outside its linear part (the only part
 * direct access reaches), so pull up to NM_PULL_LEN bytes in when they do.
 * The pull copies, it changes no byte of the packet.
 *
 * The skb may also carry the frame's outer VLAN tag in its metadata rather
 * than in its bytes (at ingress the kernel always takes it out before tc; at
 * egress a bridge or VLAN device often leaves it there for the driver). The
 * frame is then read as it was on the wire, as XDP and -r read it: the tag
 * counts as the first, the length and the headers' length grow by 4, and a
 * capture puts the tag back in its bytes.
 */
static __always_inline int tc_monitor(struct __sk_buff *skb, __u8 dir)
{
	__u32 slot = slot_of(skb->ifindex);
	struct nm_counters *cnt = counters_at(slot, dir);
	struct nm_event ev = {};
	struct nm_expr_frame expr;  /* its args written here; the rest is the expression's */
	struct cursor c;
	__u64 wire;
	__u32 l2len;
	int found;
	__u32 want = skb->len < NM_PULL_LEN ? skb->len : NM_PULL_LEN;
	__u32 taglen;

	EXPR_REGS_WRITTEN();
	if ((void *)(long)skb->data + want > (void *)(long)skb->data_end &&
	    bpf_skb_pull_data(skb, want) < 0)
		count(cnt, NM_CNT_PULL_FAILED);
	/* The pull invalidates earlier packet pointers: read them afresh. */
	c.pos = (void *)(long)skb->data;
	c.end = (void *)(long)skb->data_end;
	c.buf = NULL;
	c.l3 = c.l4 = 0;
	c.iplen = 0;

	if (cfg.expr) {
		/* Every expression reads the tag (its offsets move with it); the rest only
		 * those that ask (the skb's interface is two loads away). */
		int tag = meta_tag(skb);

		expr.args = (struct nm_expr_args){};
		if (tag >= 0) {
			expr.args.tagged = 1;
			expr.args.tag = (__u32)bpf_ntohs(skb->vlan_proto) << 16 | tag;
		}
		if (cfg.expr & NM_EXPR_LEN)
			expr.args.wire_len = skb->len + (tag >= 0 ? VLAN_TAG_LEN : 0);
		if (cfg.expr & NM_EXPR_IF) {
			expr.args.ifindex = skb->ifindex;
			expr.args.dir = dir;
		}
	}
	found = inspect(skb, &c, &ev, cnt, &l2len, meta_tag(skb), &expr);
	if (found == NM_NONE)
		return NM_TC_NEXT;
	taglen = meta_tag(skb) >= 0 ? VLAN_TAG_LEN : 0;
	ev.ifindex = skb->ifindex;
	ev.dir = dir;
	ev.len = skb->len + taglen;
	ev.segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	/*
	 * ``segs`` packets were merged into this one (GRO/GSO): on the wire each
	 * segment carried the headers, so they count once per segment.
	 */
	wire = ev.len + (__u64)(ev.segs - 1) * (c.pos - (void *)(long)skb->data + taglen);
	deliver(skb, &ev, cnt, slot, wire, l2len, false, found, &c);
	return NM_TC_NEXT;
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	return tc_monitor(skb, NM_DIR_IN);
}

SEC("tc")
int tc_egress(struct __sk_buff *skb)
{
	return tc_monitor(skb, NM_DIR_OUT);
}

/*
 * netmon drops: every skb the kernel frees as dropped (skb:kfree_skb, a tracepoint
 * that fires only then: the normal path pays nothing). A BTF tracepoint: the skb's
 * fields are plain loads (a raw tracepoint's each cost a bpf_probe_read_kernel(),
 * ~0.25 us of every drop: bench m). Its headers are copied into a per-CPU buffer and
 * go through inspect() as every hook's frames do: the same parser, the same filters.
 * Counted by interface and reason in the drops table (exact, whatever user space
 * reads), then sent as an event with its reason and location unless --quiet.
 *
 * The reason is the tracepoint's third argument from 5.17 (enum skb_drop_reason);
 * before, it has two and the program reads no third (the check is a CO-RE constant,
 * so the verifier never sees the read, which would keep it from attaching).
 * SKB_CONSUMED, where a kernel reports it here, is no drop.
 */
static __always_inline bool same_netns(struct sk_buff *skb)
{
	struct net_device *dev = skb->dev;
	struct sock *sk = skb->sk;

	if (!cfg.netns)
		return true;
	if (dev)
		return dev->nd_net.net->ns.inum == cfg.netns;
	if (sk)
		return sk->__sk_common.skc_net.net->ns.inum == cfg.netns;
	return true;  /* neither: no namespace to tell (counted under no interface) */
}

/*
 * A container's own network namespace (Proxmox VE gives each container one): its side of
 * the veth pair is the peer of the host's vethNiM, and a drop on it (a datagram to a
 * closed port in CT 101) is the guest's, though it happens in another namespace. The
 * ifindex of the peer in netmon's namespace (0: the device is no veth, or its peer is
 * not a guest's veth in netmon's namespace). A veth's private area begins with its
 * peer's pointer (struct veth_priv, a module's type: read by offset, not by name).
 */
#define NM_IFNAMSIZ 16  /* IFNAMSIZ: a net_device's name[] (vmlinux.h holds no macros) */

static __always_inline bool guest_veth(const char *name)
{
	/* Proxmox VE's name for a container's NIC on the host: vethNiM (veth101i0). Other
	 * veths (a test's, Docker's) keep their far side's drops to themselves. */
	bool nic = false;
	int i, id = 0, n = 0;

	if (name[0] != 'v' || name[1] != 'e' || name[2] != 't' || name[3] != 'h')
		return false;
	for (i = 4; i < NM_IFNAMSIZ; i++) {
		char ch = name[i];

		if (!ch)
			break;
		if (ch >= '0' && ch <= '9')
			nic ? n++ : id++;
		else if (ch == 'i' && !nic && id)
			nic = true;
		else
			return false;
	}
	return nic && n;
}

static __always_inline __u32 host_side_of_veth(struct net_device *dev)
{
	const struct rtnl_link_ops *ops = BPF_CORE_READ(dev, rtnl_link_ops);
	struct net_device *peer = NULL;
	char name[NM_IFNAMSIZ] = {};
	char kind[8] = {};
	unsigned long priv;

	if (!ops || bpf_probe_read_kernel_str(kind, sizeof(kind), BPF_CORE_READ(ops, kind)) != 5
	    || kind[0] != 'v' || kind[1] != 'e' || kind[2] != 't' || kind[3] != 'h')
		return 0;
	/* netdev_priv(): the priv[] member where the kernel names it (6.11), else the
	 * struct's size rounded to NETDEV_ALIGN (32), where it was before. */
	if (bpf_core_field_exists(dev->priv))
		priv = (unsigned long)dev + bpf_core_field_offset(struct net_device, priv);
	else
		priv = (unsigned long)dev + ((bpf_core_type_size(struct net_device) + 31) & ~31UL);
	if (bpf_probe_read_kernel(&peer, sizeof(peer), (void *)priv) || !peer) {
		count(counters_at(0, NM_DIR_IN), NM_CNT_COPY_FAILED);
		return 0;
	}
	if (BPF_CORE_READ(peer, nd_net.net, ns.inum) != cfg.netns)
		return 0;
	if (bpf_probe_read_kernel(name, sizeof(name), &peer->name) || !guest_veth(name))
		return 0;
	return BPF_CORE_READ(peer, ifindex);
}

/*
 * The dropped packet's headers into the buffer, as a frame: from its link-layer
 * header where the skb has one before its network header, else an Ethernet header
 * made of skb->protocol, then the network header. Returns the bytes in the buffer
 * (0: nothing to parse) and the frame's length, from that first header, in *len.
 */
static __always_inline __u32 copy_headers(struct sk_buff *skb, struct nm_hdrbuf *hb,
					  __u32 *len)
{
	unsigned char *head = skb->head;
	__u16 mac = skb->mac_header, net = skb->network_header;
	__u32 data = skb->data - head, tail = skb->tail;
	__u32 from, made = 0, n;
	__u64 size, at;

	if (mac != (__u16)~0 && net > mac && net - mac >= sizeof(struct ethhdr)) {
		from = mac;
	} else {
		__be16 proto = skb->protocol;

		__builtin_memset(hb->bytes, 0, 12);
		__builtin_memcpy(hb->bytes + 12, &proto, 2);
		from = net;
		made = sizeof(struct ethhdr);
	}
	*len = skb->len + data - from + made;
	if (tail <= from)
		return made;
	n = tail - from;
	if (n > NM_HDR_BUF - made)
		n = NM_HDR_BUF - made;
	size = n;
	at = made;
	/* Bounds the verifier follows: 64-bit, checked after the compiler's last word. */
	barrier_var(size);
	barrier_var(at);
	if (size > NM_HDR_BUF || at > sizeof(struct ethhdr))
		return 0;  /* never */
	if (bpf_probe_read_kernel(hb->bytes + at, size, head + from) < 0)
		return 0;
	return made + n;
}

static __always_inline void count_drop(struct nm_drop_key *key, struct nm_counters *cnt)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(&drops, key);

	if (n) {
		*n += 1;  /* this CPU's count */
		return;
	}
	if (bpf_map_update_elem(&drops, key, &one, BPF_NOEXIST) == 0)
		return;
	n = bpf_map_lookup_elem(&drops, key);  /* another CPU put it in meanwhile */
	if (n)
		*n += 1;
	else
		count(cnt, NM_CNT_DROP_UNKEYED);
}

/* Out of line, as send_event(): so that the object's BTF describes struct nm_drop. */
static __noinline int send_drop(void *ctx, struct nm_drop *d, struct nm_counters *cnt)
{
	return send_record(ctx, d, sizeof(*d), cnt);
}

SEC("tp_btf/kfree_skb")
int kfree_skb(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct nm_drop_key key = { .location = ctx[1] };
	struct net_device *dev = skb->dev;
	struct nm_drop d = {};
	struct nm_expr_frame expr;
	struct nm_counters *cnt;
	struct nm_hdrbuf *hb;
	struct cursor c;
	__u32 zero = 0, slot, l2len, n, len;
	int found;

	if (bpf_core_type_exists(enum skb_drop_reason)) {
		key.reason = ctx[2];
		if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
		    key.reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
			return 0;
		if (key.reason != bpf_core_enum_value(enum skb_drop_reason,
						      SKB_DROP_REASON_NOT_SPECIFIED))
			key.location = 0;
	}
	key.ifindex = dev ? dev->ifindex : skb->skb_iif;
	if (!same_netns(skb)) {
		/* Another namespace's drop: a container's, on its veth, counts as its host
		 * side's; any other is not netmon's to see. */
		key.ifindex = dev ? host_side_of_veth(dev) : 0;
		if (!key.ifindex)
			return 0;
	}
	slot = slot_of(key.ifindex);
	if (!slot && !cfg.any_if)
		return 0;
	cnt = counters_at(slot, NM_DIR_IN);
	hb = bpf_map_lookup_elem(&hdrbuf, &zero);
	if (!hb)
		return 0;
	n = copy_headers(skb, hb, &len);
	if (!n)
		count(cnt, NM_CNT_COPY_FAILED);
	c.pos = hb->bytes;
	c.end = hb->bytes + (n & (NM_HDR_BUF - 1 | NM_HDR_BUF));
	c.buf = hb->bytes;
	c.l3 = c.l4 = 0;
	c.iplen = 0;
	if (cfg.expr) {
		expr.args = (struct nm_expr_args){};
		if (cfg.expr & NM_EXPR_LEN)
			expr.args.wire_len = len;
		if (cfg.expr & NM_EXPR_IF)
			expr.args.ifindex = key.ifindex;
	}
	/* Beside top's flows, the interface's counters are its traffic's: drops are only
	 * in the drops table (and what it could not hold, in drop_unkeyed). */
	found = inspect(ctx, &c, &d.ev, cfg.flows ? NULL : cnt, &l2len, -1, &expr);
	if (found == NM_NONE && (cfg.match || cfg.expr))
		return 0;  /* a filter said no (what is not IP passes none) */
	count_drop(&key, cnt);
	if (found != NM_IP || cfg.quiet || cfg.flows)
		return 0;  /* not IP: counted, no line; --quiet, top: counted only */
	d.ev.ifindex = key.ifindex;
	d.ev.len = len;
	d.ev.segs = 1;
	d.ev.ts_ns = bpf_ktime_get_ns();
	d.location = ctx[1];
	d.reason = key.reason;
	send_drop(ctx, &d, cnt);
	return 0;
}
