"""Wireshark's reading of a capture file: the fields tshark prints, per packet."""

from __future__ import annotations

import subprocess


def tshark_fields(path, *fields: str) -> list[list[str]]:
    args = ["tshark", "-r", str(path), "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    res = subprocess.run(args, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in res.stdout.splitlines()]
