"""The long campaign (`make fuzz`): python -m tests.fuzz [--expressions N] [--captures N]
[--totals N] [--seed S]. Needs root for the expressions and the runs through netmon (the
kernel runs them). Prints a line per campaign; saves each finding's input under --save;
exits 1 if there was any."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz import captures, expressions, totals


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    ap.add_argument("--expressions", type=int, default=10_000)
    ap.add_argument("--captures", type=int, default=200_000)
    ap.add_argument("--through-every", type=int, default=1_000,
                    help="every Nth capture file also through `netmon -r` (0: none)")
    ap.add_argument("--totals", type=int, default=3_000)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--save", default="build/fuzz-findings")
    args = ap.parse_args()
    print(f"seed {args.seed}", flush=True)
    reports = []
    with tempfile.TemporaryDirectory(prefix="netmon-fuzz-") as tmp:
        started = time.monotonic()
        if args.captures:
            reports.append(captures.campaign(args.captures, args.seed, Path(tmp),
                                             args.through_every))
            print(reports[-1].line(), f"[{time.monotonic() - started:.0f} s]", flush=True)
        if args.totals:
            reports.append(totals.campaign(args.totals, args.seed, Path(tmp)))
            print(reports[-1].line(), f"[{time.monotonic() - started:.0f} s]", flush=True)
        if args.expressions:
            reports.append(expressions.campaign(args.expressions, args.seed))
            print(reports[-1].line(), f"[{time.monotonic() - started:.0f} s]", flush=True)
    found = [(r, f) for r in reports for f in r.findings]
    save = Path(args.save)
    for i, (report, finding) in enumerate(found):
        save.mkdir(parents=True, exist_ok=True)
        data = finding.input if isinstance(finding.input, bytes) else finding.input.encode()
        (save / f"{report.name.replace(' ', '-')}-{i}").write_bytes(data)
        print(f"{report.name}: {finding.what}\n{finding.detail}", file=sys.stderr)
    if found:
        print(f"{len(found)} findings; inputs under {save}/", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
