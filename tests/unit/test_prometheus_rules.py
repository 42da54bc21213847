"""contrib/prometheus: the rules pass promtool's checks and its unit tests, and every
alert is tested both ways (series that make it fire, series that must not)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES_DIR = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"
RULES, TESTS = RULES_DIR / "netmon-rules.yml", RULES_DIR / "netmon-rules.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed "
                                    "(Debian's prometheus package; .ci/run installs it)")


def _alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


@needs_promtool
def test_promtool_checks_the_rules_clean():
    res = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                         text=True)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr
    assert "WARNING" not in res.stdout + res.stderr


@needs_promtool
def test_promtool_runs_the_rules_unit_tests():
    res = subprocess.run([PROMTOOL, "test", "rules", TESTS.name], capture_output=True,
                         text=True, cwd=RULES_DIR)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    cases: dict[str, list[list]] = {}
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    for name in _alerts():
        assert any(cases.get(name, [])), f"{name}: no case where it fires"
        assert any(not c for c in cases.get(name, [])), f"{name}: no case where it must not"


def test_every_alert_names_the_guest_by_name_and_says_what_to_do():
    for name, rule in _alerts().items():
        notes = rule["annotations"]
        assert notes.get("summary") and notes.get("description"), name
        if "guest" in rule["expr"]:
            for text in (notes["summary"], notes["description"]):
                assert "{{ $labels.guest_name }}" in text, (name, text)
