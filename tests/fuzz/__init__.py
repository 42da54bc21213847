"""Fuzzing what netmon reads from others: capture files (-r), filter expressions (against
libpcap itself) and totals databases (netmon totals).

Each campaign draws its inputs from a seeded random.Random, so a finding is replayed by
its seed and number. ``python -m tests.fuzz`` runs the long campaign (``make fuzz``);
tests/unit/test_fuzz.py and tests/kernel/test_fuzz.py run short ones in every test run.
A finding is an input and what went wrong with it; the inputs are saved to be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Finding:
    what: str  # one line: the exception or the disagreement
    input: bytes | str  # the file's bytes, or the expression
    detail: str = ""  # a traceback, the frame, the verdicts


@dataclass
class Report:
    name: str
    inputs: int = 0  # generated and tried
    counts: dict[str, int] = field(default_factory=dict)  # outcomes by kind
    findings: list[Finding] = field(default_factory=list)

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n

    def line(self) -> str:
        outcomes = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        return (f"{self.name}: {self.inputs} inputs ({outcomes}); "
                f"{len(self.findings)} findings")
