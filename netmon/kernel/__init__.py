"""Mechanism: the BPF object, its maps, its hooks, libbpf. Everything here takes plain
values (a config's bytes, hook names, a mode, a method), never a Settings; which hooks a
run uses is policy, above it (sources/policy.py). What each kernel version can do is
one table (facts.py).
"""
