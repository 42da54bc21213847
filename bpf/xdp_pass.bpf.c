// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The empty baseline: an XDP program that only passes frames. Tests attach it
 * as "somebody else's program" that netmon must leave alone, and bench/
 * measures netmon's program against it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
