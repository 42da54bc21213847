"""contrib/: the Grafana dashboard and the Prometheus rules against a real Prometheus
scraping real netmons, with traffic on two fake guests' taps.

Grafana cannot be installed here, so what can be is tested: every metric a panel or a
rule names is in a live netmon's /metrics, and every panel's PromQL (its variables
filled in as Grafana would) and every recording rule returns data from Prometheus.
Two netmons on the node, as README's Proxmox section runs them: `netmon rtt --quiet
--metrics` (the traffic and TCP health) and `netmon drops --quiet --metrics`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.kernel.test_export import need, prometheus
from tests.support.http import free_port, http_get
from tests.support.netns import ROOT, ping, scaled
from tests.support.pve import fake_pve
from tests.support.runner import Netmon

pytestmark = pytest.mark.kernel

CONTRIB = Path(ROOT) / "contrib"
DASHBOARD = CONTRIB / "grafana" / "netmon-dashboard.json"
RULES = CONTRIB / "prometheus" / "netmon-rules.yml"
GUESTS = {100: "web1", 101: "db1"}
# Grafana's variables as it would fill them for a scrape every second (the ranges are
# the test's few minutes: rates over a minute see every sample it took).
RATE_INTERVAL, RANGE = "1m", "5m"


def panel_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row"
            for t in p["targets"]]


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """The netmon series an expression reads (recorded rules' names, level:netmon_x:op,
    aside)."""
    return set(re.findall(r"(?<![\w:])netmon_[a-z_]+(?![\w:])", expr))


def fill(expr: str, nodes: list[str]) -> str:
    """As Grafana fills a multi-value variable into a regex matcher: each value's regex
    characters escaped, the escapes doubled (PromQL's string takes one), joined in (a|b)."""
    values = "|".join(re.escape(n).replace("\\", "\\\\") for n in nodes)
    return (expr.replace("$node", f"({values})")
            .replace("$__rate_interval", RATE_INTERVAL).replace("$__range", RANGE))


def test_the_dashboards_shape_is_grafanas():
    """Offline: the data source and the node are variables, every panel reads through the
    data source variable, every rate() takes $__rate_interval, the grid is 24 wide."""
    dash = json.loads(DASHBOARD.read_text())
    names = {v["name"]: v for v in dash["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource" and names["node"]["type"] == "query"
    for p in dash["panels"]:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            for window in re.findall(r"rate\([^\[]*\[([^\]]+)\]", t["expr"]):
                assert window == "$__rate_interval", (p["title"], t["expr"])
            assert 'instance=~"$node"' in t["expr"], (p["title"], t["expr"])


def _query(n, port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(http_get(n, url))
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def _finite(result: list) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def test_every_panel_and_rule_returns_data_from_a_real_prometheus(netns, tmp_path):
    need("prometheus")
    n = netns
    env = fake_pve(tmp_path, GUESTS)
    taps = {guest: n.link(f"g{guest}", f"tap{guest}i0") for guest in GUESTS}
    traffic_port, drops_port, prom_port = (free_port(n, n.b) for _ in range(3))
    nodes = [f"127.0.0.1:{traffic_port}", f"127.0.0.1:{drops_port}"]
    shutil.copy(RULES, tmp_path / RULES.name)
    ifaces = [arg for guest in GUESTS for arg in ("-i", f"tap{guest}i0")]
    with Netmon(n, "rtt", *ifaces, "-i", n.b_if, "--quiet", "--metrics", nodes[0],
                interface=None, env=env) as traffic, \
            Netmon(n, "drops", *ifaces, "--quiet", "--metrics", nodes[1], interface=None,
                   env=env) as drops, \
            prometheus(n, tmp_path, prom_port, nodes,
                       f"rule_files: ['{RULES.name}']\n") as prom:
        traffic.wait_ready()
        drops.wait_ready()
        # Prometheus has scraped both before the traffic: rates see it arrive.
        deadline = time.monotonic() + scaled(60)
        up: list = []
        while len(up) < 2 and time.monotonic() < deadline:
            assert prom.poll() is None, prom.stderr.read()
            time.sleep(0.5)
            try:
                up = [r for r in _query(n, prom_port, 'up{job="netmon"} == 1')]
            except (json.JSONDecodeError, subprocess.CalledProcessError):
                continue  # not up yet
        assert len(up) == 2, up
        # Each guest: TCP both ways (round trips, data segments), and UDP to a port
        # nobody listens on (the kernel drops it: a drop with its reason); the host's
        # own veth: a ping.
        for guest, (g_ip, h_ip) in taps.items():
            port = 5000 + guest % 100
            server = subprocess.Popen(n.exec_args(n.b, sys.executable, "-m",
                                                  "tests.support.traffic", "echo", h_ip,
                                                  str(port)),
                                      stdout=subprocess.PIPE, text=True, cwd=ROOT)
            try:
                assert server.stdout.readline().strip() == "ready"
                n.run(n.a, sys.executable, "-m", "tests.support.traffic", "pingpong", h_ip,
                      str(port), "30", "200", cwd=ROOT)
            finally:
                server.wait(scaled(20))
            n.run(n.a, sys.executable, "-m", "tests.support.traffic", "udp", g_ip, "40000",
                  h_ip, "9", "100", "20", cwd=ROOT)
        ping(n, n.b_ip, 3)

        # Every metric a panel or a rule names is in a live netmon's /metrics (each
        # endpoint shows its counters as of netmon's last look, once a second).
        named = set().union(*(metric_names(e) for _, e in panel_queries()),
                            *(metric_names(r["expr"]) for r in rules()))
        exposed: set[str] = set()
        deadline = time.monotonic() + scaled(10)
        while not named <= exposed and time.monotonic() < deadline:
            time.sleep(0.5)
            for node in nodes:
                text = http_get(n, f"http://{node}/metrics")
                exposed |= {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                            if line and not line.startswith("#")}
        assert named and named <= exposed, named - exposed

        # The node variable: both netmons.
        deadline = time.monotonic() + scaled(60)
        pending = {f"{title}: {expr}": fill(expr, nodes) for title, expr in panel_queries()}
        pending.update({f"rule {r['record']}": r["record"] for r in rules() if "record" in r})
        pending["variable node"] = "netmon_build_info"
        while pending and time.monotonic() < deadline:
            assert prom.poll() is None, prom.stderr.read()
            time.sleep(1)
            for what, expr in list(pending.items()):
                try:
                    result = _query(n, prom_port, expr)
                except (json.JSONDecodeError, subprocess.CalledProcessError):
                    break  # not up yet
                if what == "variable node":
                    if sorted(r["metric"]["instance"] for r in result) == sorted(nodes):
                        del pending[what]
                elif _finite(result):
                    del pending[what]
        assert not pending, f"no data for: {sorted(pending)}"
        # A guest's series name it: the two fake guests, by name.
        received = _query(n, prom_port, fill(panel_queries()[0][1], nodes))
        assert {(r["metric"]["guest"], r["metric"]["guest_name"]) for r in received} == \
            {(str(g), name) for g, name in GUESTS.items()}
        assert traffic.stop() == 0 and drops.stop() == 0
