// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The least a flow table in a BPF hash map costs per packet, for the bench to
 * set netmon's flow update against: a 48-byte key (netmon's) taken from the
 * frame's first bytes, no parsing, one hash lookup (an insert the first time),
 * and with floor_count the two atomic adds of packets and bytes.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct fkey { __u8 b[48]; };
struct fkey24 { __u8 b[24]; };
struct val { __u64 packets, bytes; };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct fkey);
	__type(value, struct val);
} table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct fkey24);
	__type(value, struct val);
} table24 SEC(".maps");

static __always_inline struct val *entry(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct val *v, init = {};
	struct fkey k;

	if (data + sizeof(k) > data_end)
		return NULL;
	__builtin_memcpy(&k, data, sizeof(k));
	v = bpf_map_lookup_elem(&table, &k);
	if (!v)
		bpf_map_update_elem(&table, &k, &init, BPF_NOEXIST);
	return v;
}

SEC("xdp")
int floor_lookup(struct xdp_md *ctx)
{
	entry(ctx);
	return XDP_PASS;
}

SEC("xdp")
int floor_count(struct xdp_md *ctx)
{
	struct val *v = entry(ctx);

	if (v) {
		__sync_fetch_and_add(&v->packets, 1);
		__sync_fetch_and_add(&v->bytes, ctx->data_end - ctx->data);
	}
	return XDP_PASS;
}

/* The same with an IPv4 flow's key as it could be: 24 bytes (4-byte addresses). */
SEC("xdp")
int floor_lookup24(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct val init = {};
	struct fkey24 k;

	if (data + sizeof(k) > data_end)
		return XDP_PASS;
	__builtin_memcpy(&k, data, sizeof(k));
	if (!bpf_map_lookup_elem(&table24, &k))
		bpf_map_update_elem(&table24, &k, &init, BPF_NOEXIST);
	return XDP_PASS;
}
