"""What `netmon --help`, `netmon top --help`, `netmon drops --help` and `netmon totals
--help` say beyond their options: each command's purpose, the options that are its own,
top's keys, and examples. The examples are data, so a test runs each as printed
(tests/kernel/test_help.py) and the help cannot promise what netmon refuses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str  # as typed after "netmon"; "" for netmon itself
    summary: str  # the help's first paragraph
    short: str  # its line in netmon's list of commands
    examples: tuple[tuple[str, str], ...]  # (command line, what it shows)
    # Options of the main command this one has no use for (typer's parameter names):
    # its help leaves them out (the rules in options.py refuse them).
    without: frozenset[str] = frozenset()
    keys: tuple[tuple[str, str], ...] = ()


_CAPTURE = {"write", "print_lines", "snaplen", "file_mb", "file_count", "rotate_seconds",
            "read"}

MONITOR = Command(
    "", "Show every IP packet an interface receives (or sends), one line each, filtered "
        "in the kernel.", "",
    (("netmon -i vmbr0 --protocol tcp --dst-port 443", "HTTPS arriving on the bridge"),
     ("netmon --guest all --json", "every guest's packets, both ways, as JSON lines"),
     ("netmon -i vmbr0 -w /tmp/vmbr0.pcapng udp port 53",
      "DNS into a capture file (tcpdump's filter language after the options)")))

TOP = Command(
    "top", "A live view of the flows with the highest rates (or a row per guest, "
           "interface, host or port), redrawn every second.",
    "the flows with the highest rates, live",
    (("netmon top -i vmbr0 -Q both", "who is talking on the bridge, and how much"),
     ("netmon top --guest all --by guest", "a row per guest, VM or container"),
     ("netmon top --guest all --drops", "the flows, and below them what the kernel drops")),
    without=frozenset(_CAPTURE | {"flow_records", "top", "json_out", "quiet", "count",
                                  "rtt"}),
    keys=(("s", "sort by rate, bytes, packets in turn"),
          ("b", "a row per flow, guest, interface, host, port in turn"),
          ("w", "with --rtt: RTT and RETR% over the 2 s, 10 s, 40 s window in turn"),
          ("q", "quit (the summary follows)")))

DROPS = Command(
    "drops", "The packets the kernel drops on the interfaces watched, one line each, with "
             "the reason it gives and where (a tracepoint: nothing is attached to them).",
    "what the kernel drops, and why",
    (("netmon drops -i vmbr0", "what the host drops on the bridge, and why"),
     ("netmon drops --guest all --json", "every guest's drops, as JSON lines"),
     ("netmon drops --guest all --quiet --stats 10",
      "counts only: the drops by interface and reason, on stderr every 10 s")),
    without=frozenset(_CAPTURE | {"flow_records", "top", "ipfix", "ipfix_domain",
                                  "direction", "hook", "mode", "totals", "totals_every",
                                  "totals_keep", "sort", "by", "flow_entries", "flow_idle",
                                  "flow_active", "drops", "rtt", "rtt_entries"}))

TOTALS = Command(
    "totals", "What 'netmon --totals' kept: traffic by guest (its NICs together) and host "
              "interface, per hour, day or month: what each received and sent (a guest's own, "
              "though its tap counts them the other way round). Needs read access to the "
              "database only.",
    "what --totals kept, per guest and hour, day or month",
    (("netmon totals", "the last 30 days, a row per guest and interface each day"),
     ("netmon totals --months --month-start 15", "billing months that begin on the 15th"),
     ("netmon totals --top 5 --json", "this month's five largest, as JSON lines"),
     ("netmon totals --rtt --hours --guest 100", "guest 100's round trips (network and "
                                                 "guest) and retransmissions, per hour"),
     ("netmon totals --html /tmp/netmon.html", "the last 30 days as charts, in one HTML "
                                               "file (scp it to a laptop)")))

RTT = Command(
    "rtt", "Round-trip times and retransmissions of the TCP connections (and ICMP echoes) "
           "crossing the interfaces watched, measured in the kernel from the packets "
           "alone: a line per sample, named by what answered it (the network; a guest, "
           "on its tap; this host, on its own NICs), and percentiles at the end.",
    "round-trip times and retransmissions: network or guest?",
    (("netmon rtt --guest all", "each guest's round trips, the network's and its own, "
                                "and its retransmissions"),
     ("netmon rtt -i vmbr0 --port 443 --json", "HTTPS connections' samples as JSON lines"),
     ("netmon rtt --guest all --quiet", "no lines: the percentiles and retransmissions "
                                        "when it stops"),
     ("netmon rtt --guest all --quiet --totals /tmp/netmon-rtt.db",
      "each guest's traffic, round trips and retransmissions per hour, for netmon totals "
      "--rtt")),
    without=frozenset(_CAPTURE | {"flow_records", "top", "ipfix", "ipfix_domain", "sort",
                                  "by", "flow_entries", "flow_idle", "flow_active", "drops",
                                  "rtt"}))

COMMANDS = (TOP, DROPS, RTT, TOTALS)
BY_NAME = {c.name: c for c in (MONITOR, *COMMANDS)}


def _block(title: str, rows) -> str:
    width = max(len(left) for left, _ in rows) + 2
    # \b: click keeps the block's lines as they are instead of filling a paragraph.
    return "\b\n" + f"{title}:\n" + "\n".join(
        f"  {left.ljust(width)}{right}" for left, right in rows)


def _prompt(command: Command) -> str:
    return "" if command is TOTALS else "sudo "  # totals reads a file: no root needed


def epilog(command: Command) -> str:
    """What follows the options: the commands (netmon's own help), keys, examples."""
    parts = []
    if command is MONITOR:
        parts.append(_block("Commands", [(f"netmon {c.name}", c.short) for c in COMMANDS]
                            + [("netmon COMMAND --help", "its own options and examples")]))
    if command.keys:
        parts.append(_block("Keys", command.keys))
    parts.append("\b\nExamples:\n" + "\n".join(
        f"  {_prompt(command)}{line}\n      {what}" for line, what in command.examples))
    return "\n\n".join(parts)
