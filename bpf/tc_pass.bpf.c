// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The empty tc baseline: returns "no verdict" (TC_ACT_UNSPEC, tcx's TCX_NEXT),
 * as netmon's tc programs do. bench/ measures netmon's tc programs against it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int tc_pass(struct __sk_buff *skb)
{
	return -1;
}
