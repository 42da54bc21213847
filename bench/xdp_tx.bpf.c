// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The benchmark's traffic generator: run with BPF_PROG_TEST_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES on the sending veth, each run transmits the test
 * frame out of that veth (as xdp-trafficgen does).
 *
 * With gen.nflows > 1 the test frame must be IPv4 UDP without options and with
 * no checksum (0): each run then sends it from the next of nflows source ports
 * from gen.base_port on, so one run offers that many flows in turn.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set before load. Live frames may keep what a run wrote, so the port is set whole. */
const volatile struct {
	__u32 nflows;
	__u16 base_port;
	__u16 _pad;
} gen = { .nflows = 1 };
__u32 sent = 0;

#define UDP_SPORT_AT (14 + 20)

SEC("xdp")
int xdp_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__be16 *sport = data + UDP_SPORT_AT;

	if (gen.nflows > 1 && (void *)(sport + 1) <= end) {
		*sport = bpf_htons(gen.base_port + sent % gen.nflows);
		sent++;
	}
	return XDP_TX;
}
