#!/usr/bin/env python3
"""Run netmon's kernel tests on Debian's 5.10, 6.1 and 6.12 kernels, and on the running one.

Each Debian kernel is fetched with `apt-get download` through a private apt
configuration (its own sources list, lists and cache under build/kernels; the
host's apt setup is left alone), unpacked with dpkg-deb, and booted under qemu
with virtme-ng, which shares the host's filesystem read-only with the guest.
The tests run inside each guest; their exit status and log come back through a
shared writable folder, because vng's own exit status is not reliable.
Software emulation (--disable-kvm) is used: stock kernels do not run under this
machine's /dev/kvm.

Prints a line per kernel, then `kernels: N passed, M failed`; exits non-zero if
any failed.

    scripts/kernel-matrix.py [--python PY] [--only 5.10,6.1,...] [--no-host] [-- PYTEST ARGS]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from debian_archive import debian_mirror

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "kernels"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# series -> the Debian suite whose kernel it is
MATRIX = {"5.10": "bullseye", "6.1": "bookworm", "6.12": "trixie"}

# What runs in each guest: one variant of each test whose behaviour depends on the kernel
# (attach by bpf_link or netlink, tc through tcx or cls_bpf, kill -9 and the clean-up
# after it, the memlock rlimit libbpf raises before 5.11, the verifier on the real
# programs and on spliced expressions, tc's VLAN metadata, test runs' limits), most of
# them through BPF_PROG_TEST_RUN. A test that starts netmon costs ~1 minute under
# emulation (a netmon start ~10 s, each `ip` and helper process a second or more), and
# CI has an hour for everything: 80 tests took this machine's 5.10 guest 29 minutes.
# Left to the host, where make test runs every test and nothing in these differs by
# kernel: the filter matrix on the wire, other attach modes and hook combinations, the
# banner, both directions at once, globs, two netmons, foreign programs, the fallback to
# generic, --flows' table overflow, the other VLAN and expression variants.
GUEST_TESTS = [
    *(f"tests/kernel/test_program.py::{t}" for t in (
        "test_every_frame_passes", "test_counters_account_for_every_frame",
        "test_matched_packets_are_counted_by_protocol",
        "test_every_sample_frame_matches_the_reference", "test_decoded_fields",
        "test_kernel_and_python_filters_agree[[('Protocol', 'tcp'), ('Destination IP', "
        "'93.184.216.34'), ('Destination port', '443')]]",
        "test_kernel_and_python_filters_agree[[('Protocol', 'tcp or udp'), "
        "('Host (either direction)', '8.8.8.8 or 2001:db8::/32')]]",
        "test_kernel_and_python_filters_agree[[('Protocol', 'tcp'), ('VLAN', '7')]]",
        "test_a_full_buffer_is_counted_not_hidden", "test_object_layout_is_checked",
        "test_the_verifier_walks_few_paths[events-xdp-one value each]",
        "test_the_verifier_walks_few_paths[capture-tc_in-8 values each]",
        "test_the_verifier_walks_few_paths[flows-tc_out-one value each]")),
    # XDP: bpf_link from 5.9, netlink before; what a killed netmon left through netlink
    # is read back from the program's .rodata and removed; ENODEV while attaching.
    "tests/kernel/test_lines.py::test_attach_modes[auto-native]",
    "tests/kernel/test_lines.py::test_a_tiny_memlock_limit_is_no_obstacle",
    "tests/kernel/test_misuse.py::test_the_xdp_program_a_killed_netmon_left_is_removed_by_the_next",
    "tests/kernel/test_misuse.py::test_an_interface_deleted_while_netmon_starts_is_gone_not_a_driver_problem[0.4]",
    # tc: tcx on 6.12 and the running kernel, clsact + cls_bpf on 5.10 and 6.1.
    "tests/kernel/test_directions.py::test_egress_shows_what_the_interface_sends",
    "tests/kernel/test_directions.py::test_kill_9_leaves_no_tc_hook_behind[netlink]",
    # Capture: pcapng blocks built by the kernel; -r through test runs, which take a page
    # per frame before 5.18; multi-buffer XDP from 5.18.
    "tests/kernel/test_capture_records.py",
    "tests/kernel/test_capture.py::test_jumbo_frames_are_captured_whole",
    "tests/kernel/test_corpus.py::test_corpus_agrees_with_the_reference",
    # Flows: the tables read while packets come (batch ops from 5.6, the atomic OR 5.12).
    "tests/kernel/test_flow_table.py::test_reading_the_tables_loses_no_count",
    # One frame, one answer: the tag the kernel keeps in skb metadata at tc.
    "tests/kernel/test_vlan.py::test_tagged_frames_read_alike_at_every_hook[tc]",
    # Expressions: translations through each kernel's verifier, against libpcap; spliced
    # into netmon's programs, a 200-term or chain among them; and live at tc egress.
    "tests/kernel/test_expression.py::test_the_corpus_gets_libpcaps_verdicts[tcp port 443 and host 10.0.0.5-xdp]",
    "tests/kernel/test_expression.py::test_the_corpus_gets_libpcaps_verdicts[vlan 20 and icmp6-tc]",
    "tests/kernel/test_expression.py::test_the_corpus_gets_libpcaps_verdicts[ip[2:2] / ip[8] > 3-xdp]",
    "tests/kernel/test_expression.py::test_a_long_or_chain_is_verified_in_each_program",
    "tests/kernel/test_expression.py::test_an_expression_at_every_hook[tc-out]",
    # Drops: the BTF tracepoint's program through each verifier (a reason from 5.17, CO-RE
    # guards that keep 5.10 from reading one), an expression spliced in; the reasons' names
    # from the kernel's BTF; one live run (locations only on 5.10).
    "tests/kernel/test_drops.py::test_the_program_counts_drops_by_interface_and_reason",
    "tests/kernel/test_drops.py::test_the_kernels_reasons_are_read_from_its_btf",
    "tests/kernel/test_drops.py::test_a_port_with_no_socket_drops_each_datagram",
    # dropwatch beside netmon: the drop monitor it needs is a module of Debian's kernels
    # (the running one here has none, and skips it).
    "tests/kernel/test_drops.py::test_netmon_counts_what_dropwatch_counts_and_says_why",
    # TCP health: the programs with it on through each verifier, its exact cases under test
    # runs, and one live run with netem (a module of Debian's kernels; none here): a delay
    # behind a guest's tap in the guest's component, a loss after it as retransmissions.
    *(f"tests/kernel/test_rtt_program.py::{t}" for t in (
        "test_retransmissions_and_reordering_exactly[None-False]",
        "test_a_timestamp_echo_ends_the_sample_it_started",
        "test_the_handshake_gives_both_round_trips_without_timestamps",
        "test_icmp_echo_gives_a_round_trip_v4_and_v6")),
    "tests/kernel/test_rtt.py::test_netem_delay_and_loss_where_the_kernel_has_netem",
]


def apt_options() -> list[str]:
    return [
        "-o", f"Dir::Etc::SourceList={WORK / 'apt' / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={WORK / 'apt' / 'lists'}",
        "-o", f"Dir::Cache={WORK / 'apt' / 'cache'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Get::List-Cleanup=0",
        "-o", "APT::Sandbox::User=root",
    ]


def apt_update(mirror: str) -> None:
    (WORK / "apt" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (WORK / "apt" / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    lines = [f"deb [signed-by={KEYRING}] {mirror} {suite} main" for suite in MATRIX.values()]
    (WORK / "apt" / "sources.list").write_text("\n".join(lines) + "\n")
    subprocess.run(["apt-get", *apt_options(), "-qq", "update"], check=True)


def image_package(suite: str) -> str:
    """The versioned linux-image package that suite's linux-image-amd64 points at."""
    out = subprocess.run(["apt-cache", *apt_options(), "show", "linux-image-amd64"],
                         capture_output=True, text=True, check=True).stdout
    # apt-cache shows every version it knows; match the suite by the kernel it names.
    for stanza in out.split("\n\n"):
        dep = re.search(r"^Depends: (linux-image-[^\s,]+)", stanza, re.M)
        if not dep:
            continue
        name = dep.group(1)
        series = re.match(r"linux-image-(\d+\.\d+)", name).group(1)
        if MATRIX.get(series) == suite:
            return name
    sys.exit(f"kernel-matrix: no linux-image for {suite} in the archive")


def fetch(series: str) -> Path:
    """Download and unpack the series' kernel; return its vmlinuz."""
    dest = WORK / series
    found = sorted(dest.glob("boot/vmlinuz-*"))
    if found:
        return found[-1]
    name = image_package(MATRIX[series])
    debs = WORK / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", *apt_options(), "-qq", "download", name], cwd=debs, check=True)
    (deb,) = debs.glob(f"{name}_*.deb")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    deb.unlink()
    return sorted(dest.glob("boot/vmlinuz-*"))[-1]


# A fixed piece of Python work, timed on the host and in each guest: the ratio is how
# much slower the guest runs, and the tests' waits are stretched by it.
CALIBRATE = ("import time;t=time.perf_counter();sum(i*i for i in range(300000));"
             "import netmon.cli;print(time.perf_counter()-t)")


MAX_SCALE = 30


def host_calibration(python: str) -> float:
    runs = [float(subprocess.run([python, "-c", CALIBRATE], capture_output=True, text=True,
                                 check=True, cwd=ROOT).stdout) for _ in range(3)]
    return min(runs)


def guest_command(python: str, results: Path, tag: str, pytest_args: list[str],
                  host_seconds: float | None = None) -> str:
    """A short command that runs the tests; the script itself goes into a file.

    virtme-ng passes the command on the kernel command line, and a long one
    overflows it (6.1 panics at boot).
    """
    # -v: each test's name goes into the log as it starts, so the tail of a guest that
    # ran out of time names the test it was in.
    args = [python, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:warnings",
            "--durations=10", *pytest_args, *[str(ROOT / t) for t in GUEST_TESTS]]
    log, rc = results / f"{tag}.log", results / f"{tag}.rc"
    script = results / f"{tag}.sh"
    scale = ""
    if host_seconds:
        # Slower here than on the host by this much (at least 1): the tests' waits grow by it.
        # Timed warm (the first run reads every file through the shared folder), and
        # capped, so that a test that really hangs still ends within the kernel's timeout.
        calibrate = f"{shlex.quote(python)} -c {shlex.quote(CALIBRATE)}"
        ratio = (f"{calibrate} >/dev/null; {calibrate} | awk '{{r = $1 / {host_seconds:.6f}; "
                 f"print (r < 1 ? 1 : (r > {MAX_SCALE} ? {MAX_SCALE} : r))}}'")
        scale = (f"NETMON_TIME_SCALE=$(cd {ROOT} && PYTHONDONTWRITEBYTECODE=1 {ratio})\n"
                 f"export NETMON_TIME_SCALE\necho \"time scale $NETMON_TIME_SCALE\" > {log}\n")
    # The guest sees the host's files read-only: run where it can write.
    script.write_text(f"{scale}cd /tmp\nPYTHONDONTWRITEBYTECODE=1 NETMON_REQUIRE_KERNEL=1 "
                      f"{shlex.join(args)} >> {log} 2>&1\necho $? > {rc}\n")
    return f"sh {script}"


def tail_of(log: Path, lines: int = 15) -> str:
    """The end of a guest's log, indented, for the matrix's own output (CI shows it)."""
    if not log.exists():
        return "    (no log)"
    text = log.read_text(errors="replace").splitlines()
    return "\n".join("    " + ln for ln in text[-lines:])


def summary_of(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    scale = next((ln for ln in lines if ln.startswith("time scale ")), "")
    last = lines[-1].strip("= ") if lines else "no output"
    return f"{last} ({scale})" if scale else last


def run_guest(vng: str, kimg: Path, python: str, results: Path, pytest_args: list[str],
              timeout: float, host_seconds: float, cpus: int) -> tuple[bool | None, str]:
    """(True: passed, False: failed, None: out of time), and the kernel's line."""
    tag = kimg.name.removeprefix("vmlinuz-")
    rc_file = results / f"{tag}.rc"
    rc_file.unlink(missing_ok=True)
    cmd = [vng, "--run", str(kimg), "--disable-kvm", "--cpus", str(cpus), "--memory", "2G",
           "--rwdir", str(results), "--exec",
           guest_command(python, results, tag, pytest_args, host_seconds)]
    # vng runs virtme-run, which lives beside it.
    env = {**os.environ, "PATH": f"{Path(vng).parent}:{os.environ.get('PATH', '')}"}
    # A session of its own: out of time, the whole guest goes (qemu outlives vng else,
    # and its tests run on into the next guest's time).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, f"{tag}: out of time after {timeout:.0f} s"
    proc = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if not rc_file.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return False, f"{tag}: the guest did not run the tests ({' | '.join(tail)})"
    ok = rc_file.read_text().strip() == "0"
    return ok, f"{tag}: {summary_of(results / f'{tag}.log')}"


def run_host(python: str, results: Path, pytest_args: list[str]) -> tuple[bool, str]:
    tag = platform.release()
    cmd = guest_command(python, results, tag, pytest_args)
    (results / f"{tag}.log").unlink(missing_ok=True)
    subprocess.run(["sh", "-c", cmd], check=False)
    ok = (results / f"{tag}.rc").read_text().strip() == "0"
    return ok, f"{tag} (running): {summary_of(results / f'{tag}.log')}"


def main() -> int:
    ap = argparse.ArgumentParser(description="netmon's kernel test matrix")
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                    help="the Python with netmon and the test tools installed")
    ap.add_argument("--only", help="comma-separated series to run (default: all)")
    # CI has an hour for everything; the guests share this much of it, counted from the
    # first boot. A guest may take up to --timeout of what is left; one out of time is not
    # booted again (a second boot would only run out too), one that failed is, if time is
    # left.
    ap.add_argument("--budget", type=int, default=2400, help="seconds for all the kernels")
    ap.add_argument("--timeout", type=int, default=1500, help="seconds per kernel, at most")
    # Emulation runs each guest CPU on a host thread, and the tests keep about one busy:
    # one guest with two CPUs used 1.1 of this machine's 2 cores. Guests side by side,
    # one CPU each, finish the matrix in about half the time.
    ap.add_argument("--parallel", type=int, default=2, help="guests at once")
    ap.add_argument("--no-host", action="store_true",
                    help="skip the running kernel (where make test runs everything anyway)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()

    vng = str(Path(args.python).parent / "vng")
    series = args.only.split(",") if args.only else list(MATRIX)
    results = WORK / "results"
    results.mkdir(parents=True, exist_ok=True)

    apt_update(debian_mirror())
    # Compiled here once: the guests read the tree read-only, and an emulated guest
    # compiling every module at every netmon start is minutes over a suite.
    subprocess.run([args.python, "-m", "compileall", "-q", str(ROOT / "netmon"),
                    str(ROOT / "tests"), str(ROOT / "scripts")], check=True)
    host_seconds = host_calibration(args.python)
    outcomes = []
    if not args.no_host:
        ok, line = run_host(args.python, results, args.pytest_args)
        print(f"kernel {line}: {'passed' if ok else 'FAILED'}", flush=True)
        outcomes.append(ok)
    kernels = [fetch(s) for s in series]
    deadline = time.monotonic() + args.budget
    parallel = max(1, min(args.parallel, len(kernels)))
    cpus = max(1, (os.cpu_count() or 2) // parallel)

    def one(kimg: Path) -> bool:
        start = time.monotonic()
        tag = kimg.name.removeprefix("vmlinuz-")
        log = results / f"{tag}.log"

        def boot() -> tuple[bool | None, str]:
            left = min(args.timeout, deadline - time.monotonic())
            if left < 60:
                return None, f"{tag}: no time left of the budget"
            return run_guest(vng, kimg, args.python, results, args.pytest_args, left,
                             host_seconds, cpus)

        ok, line = boot()
        if ok is False:
            # Emulation on a shared machine can starve a guest past a test's wait; a
            # second boot tells that from a real failure, and the line says so.
            print(f"kernel {line}: failed once, booting it again\n{tail_of(log)}", flush=True)
            if log.exists():  # keep the first boot's log: its failures are the news
                log.replace(log.with_suffix(".first.log"))
            ok, line = boot()
            line += " (second boot)"
        verdict = "passed" if ok else ("OUT OF TIME" if ok is None else "FAILED")
        report = f"kernel {line}: {verdict} ({time.monotonic() - start:.0f} s)"
        print(report + ("" if ok else "\n" + tail_of(log)), flush=True)
        return bool(ok)

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        outcomes += list(pool.map(one, kernels))
    passed = sum(outcomes)
    print(f"kernels: {passed} passed, {len(outcomes) - passed} failed")
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
