// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The benchmark's traffic generator: run with BPF_PROG_TEST_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES on the sending veth, each run transmits the test
 * frame out of that veth (as xdp-trafficgen does).
 *
 * With gen.nflows > 1 the test frame must be IPv4 UDP without options and with
 * no checksum (0): each run then sends it from the next of nflows source ports
 * from gen.base_port on, so one run offers that many flows in turn.
 *
 * With gen.conv, the frame is an IPv4 TCP data segment without IP options and with
 * the timestamp option after two NOPs (gen.payload bytes of data): the runs are then
 * nflows TCP conversations in turn, each segment of one answered by the other side's
 * next (every segment new data, every TSval new, each TSecr echoing the other side's
 * last), as real connections exchanging data are. Both ways are written into the one
 * frame going out (the receiver's XDP sees them all as ingress): addresses and ports
 * swapped, which leaves the IP header's checksum as it is; the TCP checksum is not
 * kept (the receiver's stack drops them; the watcher has seen them by then).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set before load. Live frames may keep what a run wrote, so what a run varies is set
 * whole every run. */
const volatile struct {
	__u32 nflows;
	__u16 base_port;
	__u16 conv;        /* TCP conversations (above) */
	__be32 a_ip, b_ip; /* conv: the two sides, a's port from base_port on */
	__u16 b_port;
	__u16 _pad;
	__u32 payload;
} gen = { .nflows = 1 };
__u32 sent = 0;

#define UDP_SPORT_AT (14 + 20)

struct conv_frame {
	struct ethhdr eth;
	struct iphdr ip;
	struct tcphdr tcp;
	__u8 nop[2], kind, len;
	__be32 tsval, tsecr;
} __attribute__((packed));

static __always_inline void conversation(struct conv_frame *f)
{
	__u32 conn = sent % gen.nflows, round = sent / gen.nflows;
	__u32 r = round >> 1, p = gen.payload;
	__be16 a_port = bpf_htons(gen.base_port + conn), b_port = bpf_htons(gen.b_port);

	if (!(round & 1)) {  /* a's segment r: it echoes b's last */
		f->ip.saddr = gen.a_ip;
		f->ip.daddr = gen.b_ip;
		f->tcp.source = a_port;
		f->tcp.dest = b_port;
		f->tcp.seq = bpf_htonl(1 + r * p);
		f->tcp.ack_seq = bpf_htonl(1 + r * p);
		f->tsval = bpf_htonl(2 * r + 1);
		f->tsecr = bpf_htonl(2 * r);
	} else {  /* b's answer: its data, a's segment acked and its TSval echoed */
		f->ip.saddr = gen.b_ip;
		f->ip.daddr = gen.a_ip;
		f->tcp.source = b_port;
		f->tcp.dest = a_port;
		f->tcp.seq = bpf_htonl(1 + r * p);
		f->tcp.ack_seq = bpf_htonl(1 + (r + 1) * p);
		f->tsval = bpf_htonl(2 * r + 2);
		f->tsecr = bpf_htonl(2 * r + 1);
	}
}

SEC("xdp")
int xdp_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__be16 *sport = data + UDP_SPORT_AT;

	if (gen.conv) {
		if (data + sizeof(struct conv_frame) <= end && gen.nflows)
			conversation(data);
		sent++;
	} else if (gen.nflows > 1 && (void *)(sport + 1) <= end) {
		*sport = bpf_htons(gen.base_port + sent % gen.nflows);
		sent++;
	}
	return XDP_TX;
}
