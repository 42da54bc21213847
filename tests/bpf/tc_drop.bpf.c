// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Someone else's tc filter: drops ICMP echo requests to IPv4 addresses ending in
 * .4 and lets everything else through. Tests put it on the hook netmon watches,
 * to see that netmon ends no other program's chain.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int drop_echo_to_dot4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	__u8 *icmp_type = (void *)(iph + 1);

	if ((void *)(icmp_type + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || iph->ihl != 5 || iph->protocol != IPPROTO_ICMP)
		return TC_ACT_OK;
	if ((bpf_ntohl(iph->daddr) & 0xff) == 4 && *icmp_type == 8)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
