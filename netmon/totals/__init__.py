"""--totals: the kernel's counts per guest and interface, kept in SQLite for months.

    store   the database: its schema, the one writer (sinks/totals.py drives it), reading
    report  netmon totals: its tables and JSON, from the database alone (no root, no BPF)
"""
