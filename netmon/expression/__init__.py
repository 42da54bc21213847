"""tcpdump's filter language: expressions compiled by libpcap into classic BPF, which
netmon translates into eBPF and runs inside its own programs, at every hook."""
