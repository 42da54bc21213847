/*
 * The part of libbpf 1.x's API that netmon calls, for cffi's ABI mode.
 *
 * Opts structs are declared up to the last field netmon sets: libbpf reads
 * only the first .sz bytes of each, so a prefix is valid for every 1.x release.
 * va_list is passed as a pointer on the ABIs netmon runs on (x86-64, arm64).
 */
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef int32_t __s32;
typedef uint64_t __u64;

struct bpf_object;
struct bpf_program;
struct bpf_map;
struct perf_buffer;
struct btf;

struct btf_type {
	__u32 name_off;
	__u32 info;
	__u32 size;
};

__u32 libbpf_major_version(void);
__u32 libbpf_minor_version(void);
const char *libbpf_version_string(void);
int libbpf_strerror(int err, char *buf, size_t size);
int libbpf_num_possible_cpus(void);

typedef int (*libbpf_print_fn_t)(int level, const char *fmt, void *ap);
libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn);

struct bpf_object *bpf_object__open_file(const char *path, const void *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj, const char *name);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);
struct btf *bpf_object__btf(const struct bpf_object *obj);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__type(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
__u32 bpf_program__flags(const struct bpf_program *prog);
int bpf_program__set_flags(struct bpf_program *prog, __u32 flags);

__s32 btf__find_by_name_kind(const struct btf *btf, const char *type_name, __u32 kind);
const struct btf_type *btf__type_by_id(const struct btf *btf, __u32 id);
struct btf *btf__load_vmlinux_btf(void);
void btf__free(struct btf *btf);

struct btf_enum {
	__u32 name_off;
	__s32 val;
};

int bpf_raw_tracepoint_open(const char *name, int prog_fd);

int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_prog_get_fd_by_id(__u32 id);
int bpf_map_get_fd_by_id(__u32 id);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);

struct bpf_map_batch_opts {
	size_t sz;
	__u64 elem_flags;
	__u64 flags;
};
int bpf_map_lookup_and_delete_batch(int fd, void *in_batch, void *out_batch, void *keys,
				    void *values, __u32 *count,
				    const struct bpf_map_batch_opts *opts);

struct bpf_link_create_opts {
	size_t sz;
	__u32 flags;
};
int bpf_link_create(int prog_fd, int target_fd, int attach_type,
		    const struct bpf_link_create_opts *opts);

struct bpf_xdp_attach_opts {
	size_t sz;
	int old_prog_fd;
};
int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);

struct bpf_xdp_query_opts {
	size_t sz;
	__u32 prog_id;
	__u32 drv_prog_id;
	__u32 hw_prog_id;
	__u32 skb_prog_id;
	__u8 attach_mode;
};
int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);

/* tc: a clsact qdisc and cls_bpf direct-action filters, for kernels without tcx. */
enum bpf_tc_attach_point {
	BPF_TC_INGRESS = 1,
	BPF_TC_EGRESS = 2,
	BPF_TC_CUSTOM = 4,
};
struct bpf_tc_hook {
	size_t sz;
	int ifindex;
	enum bpf_tc_attach_point attach_point;
	__u32 parent;
};
struct bpf_tc_opts {
	size_t sz;
	int prog_fd;
	__u32 flags;
	__u32 prog_id;
	__u32 handle;
	__u32 priority;
};
int bpf_tc_hook_create(struct bpf_tc_hook *hook);
int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);

void perf_buffer__free(struct perf_buffer *pb);

/* The first PERF_ATTR_SIZE_VER0 (64) bytes of the kernel's perf_event_attr. */
struct perf_event_attr {
	__u32 type;
	__u32 size;
	__u64 config;
	__u64 sample_period;
	__u64 sample_type;
	__u64 read_format;
	__u64 flags;          /* the bitfield block: disabled, inherit, ..., watermark (bit 14) */
	__u32 wakeup_watermark;
	__u32 bp_type;
	__u64 config1;
};
struct perf_event_header;
typedef int (*perf_buffer_event_fn)(void *ctx, int cpu, struct perf_event_header *event);
struct perf_buffer *perf_buffer__new_raw(int map_fd, size_t page_cnt, struct perf_event_attr *attr,
					 perf_buffer_event_fn event_cb, void *ctx, const void *opts);
size_t perf_buffer__buffer_cnt(const struct perf_buffer *pb);
int perf_buffer__buffer_fd(const struct perf_buffer *pb, size_t buf_idx);
int perf_buffer__buffer(struct perf_buffer *pb, int buf_idx, void **buf, size_t *buf_size);

struct bpf_test_run_opts {
	size_t sz;
	const void *data_in;
	void *data_out;
	__u32 data_size_in;
	__u32 data_size_out;
	const void *ctx_in;
	void *ctx_out;
	__u32 ctx_size_in;
	__u32 ctx_size_out;
	__u32 retval;
	int repeat;
	__u32 duration;
	__u32 flags;
	__u32 cpu;
	__u32 batch_size;
};
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);

/*
 * Loading instructions netmon made itself, and changing a program's instructions as
 * libbpf is about to load it (filter expressions: kernel/splice.py). The whole of
 * libbpf 1.1's bpf_prog_load_opts: the prepare callback reads and writes its fields.
 */
struct bpf_prog_load_opts {
	size_t sz;
	int attempts;
	int expected_attach_type;
	__u32 prog_btf_fd;
	__u32 prog_flags;
	__u32 prog_ifindex;
	__u32 kern_version;
	__u32 attach_btf_id;
	__u32 attach_prog_fd;
	__u32 attach_btf_obj_fd;
	const int *fd_array;
	const void *func_info;
	__u32 func_info_cnt;
	__u32 func_info_rec_size;
	const void *line_info;
	__u32 line_info_cnt;
	__u32 line_info_rec_size;
	__u32 log_level;
	__u32 log_size;
	char *log_buf;
};
int bpf_prog_load(int prog_type, const char *prog_name, const char *license,
		  const void *insns, size_t insn_cnt, const struct bpf_prog_load_opts *opts);

const char *bpf_program__name(const struct bpf_program *prog);
const void *bpf_program__insns(const struct bpf_program *prog);
size_t bpf_program__insn_cnt(const struct bpf_program *prog);
int bpf_program__set_insns(struct bpf_program *prog, void *new_insns, size_t new_insn_cnt);
const char *btf__name_by_offset(const struct btf *btf, __u32 offset);

typedef int (*libbpf_prog_prepare_load_fn_t)(struct bpf_program *prog,
					     struct bpf_prog_load_opts *opts, long cookie);
struct libbpf_prog_handler_opts {
	size_t sz;
	long cookie;
	void *prog_setup_fn;
	libbpf_prog_prepare_load_fn_t prog_prepare_load_fn;
	void *prog_attach_fn;
};
int libbpf_register_prog_handler(const char *sec, int prog_type, int exp_attach_type,
				 const struct libbpf_prog_handler_opts *opts);
int libbpf_unregister_prog_handler(int handler_id);
