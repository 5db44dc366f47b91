"""The one ROS-domain reservation of the suite (test/conftest.py): every DDS test module takes its domain from it, the
modules of a run get distinct domains within Fast DDS's range, and concurrent runs get different slots."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import conftest
from conftest import DDS_TEST_MODULES, DOMAINS_PER_RUN, MAX_DOMAIN, ros_domain

TEST_DIR = Path(__file__).resolve().parent
# What makes a module talk DDS: the ros_context fixture, a domain passed to a graph / the CLI, or ROS_DOMAIN_ID.
DDS_USE = re.compile(r"\bros_context\b|domain_id=|--domain-id\", str\(|ROS_DOMAIN_ID=")


def test_every_dds_test_module_takes_its_domain_from_conftest():
    users = sorted(p.stem for p in TEST_DIR.glob("test_*.py")
                   if p.name != Path(__file__).name and DDS_USE.search(p.read_text()))
    assert users, "the pattern finds nothing: update DDS_USE"
    assert set(users) <= set(DDS_TEST_MODULES), "missing from DDS_TEST_MODULES: " + ", ".join(
        sorted(set(users) - set(DDS_TEST_MODULES)))
    for name in DDS_TEST_MODULES:
        text = (TEST_DIR / f"{name}.py").read_text()
        assert re.search(r"^DOMAIN = ros_domain\(__name__\)", text, re.M), f"{name}: DOMAIN = ros_domain(__name__)"
        assert not re.search(r"DOMAIN\w* = .*getpid", text), f"{name}: a domain of its own derived from the pid"


def test_domains_are_distinct_per_module_and_in_range():
    domains = [ros_domain(name) for name in DDS_TEST_MODULES]
    assert len(set(domains)) == len(domains)
    assert len(DDS_TEST_MODULES) <= DOMAINS_PER_RUN
    assert 1 <= min(domains) and max(domains) <= MAX_DOMAIN
    base = domains[0]
    assert domains == list(range(base, base + len(domains)))  # one contiguous block per run


def test_concurrent_runs_take_different_slots():
    """A second process (a parallel test run) takes another slot while this one holds its own."""
    mine = conftest._run_slot()
    code = "import sys; sys.path.insert(0, sys.argv[1]); import conftest; print(conftest._run_slot())"
    other = int(subprocess.run([sys.executable, "-c", code, str(TEST_DIR)], capture_output=True, text=True,
                               check=True, timeout=60).stdout)
    assert other != mine
