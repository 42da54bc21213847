// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * netmon's program with its entry point replaced by one the verifier must
 * refuse: it reads the frame without a bounds check. Tests use it to see how
 * netmon reports a rejected program. The maps, config and helpers are the
 * real ones, so the object passes netmon's layout checks.
 */
#define xdp_monitor xdp_monitor_checked
#include "xdp_monitor.bpf.c"
#undef xdp_monitor

SEC("xdp")
int xdp_monitor(struct xdp_md *ctx)
{
	struct nm_event ev = {};

	ev.len = *(__u32 *)(void *)(long)ctx->data;
	send_event(ctx, &ev, 0);
	return XDP_PASS;
}
