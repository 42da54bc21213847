/*
 * The part of libpcap (libpcap.so.0.8) netmon uses: compile a filter expression
 * into classic BPF for Ethernet frames, and run classic BPF on a frame (the
 * tests' oracle). Its struct bpf_insn is classic BPF's, not libbpf's: these
 * declarations have a cffi module of their own.
 */
typedef struct pcap pcap_t;

struct bpf_insn {
	unsigned short code;
	unsigned char jt;
	unsigned char jf;
	unsigned int k;
};

struct bpf_program {
	unsigned int bf_len;
	struct bpf_insn *bf_insns;
};

struct timeval {
	long tv_sec;
	long tv_usec;
};

struct pcap_pkthdr {
	struct timeval ts;
	unsigned int caplen;
	unsigned int len;
};

pcap_t *pcap_open_dead(int linktype, int snaplen);
int pcap_compile(pcap_t *p, struct bpf_program *fp, const char *str, int optimize,
		 unsigned int netmask);
void pcap_freecode(struct bpf_program *fp);
char *pcap_geterr(pcap_t *p);
void pcap_close(pcap_t *p);
int pcap_offline_filter(const struct bpf_program *fp, const struct pcap_pkthdr *h,
			const unsigned char *pkt);
const char *pcap_lib_version(void);
