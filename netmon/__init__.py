"""netmon: an eBPF/XDP network traffic monitor for Linux hosts."""

__version__ = "0.1.0"
