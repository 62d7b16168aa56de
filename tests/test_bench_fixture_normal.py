"""``python -m bench fixture-normal``: br-int taken through its states on a real pyvswitch and a real OVS 3.1 (each
change leaves exactly the fixture's flows, or none, and no TLV mapping behind), the ratios paired in time, and
py-spy's raw output read by thread.

No traffic: the states are what the benchmark's numbers are labelled with, so they are checked on both switches.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from bench import fixture_normal as fn
from bench.dpprofile import compare, parse_raw
from tests import ovn_fixture as fx
from tests.netutil import unique
from tests.switchutil import Switch, private_switch
from tests.test_bridge_identity import RealOvs

NS = unique("pvbfn")


class NsSwitch(Switch):
    """``pyvswitch run`` inside a namespace of its own (br-int's internal ports never reach the root namespace)."""

    def command(self) -> list[str]:
        return ["ip", "netns", "exec", NS, *super().command()]


@pytest.fixture(params=["pyvswitch", "ovs"])
def env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The tools' environment of a running switch with no br-int yet."""
    if request.param == "ovs":
        with tempfile.TemporaryDirectory(prefix="realovs-fn-") as rundir:
            real = RealOvs(rundir)
            try:
                real.start()
                yield real.env
            finally:
                real.stop()
        return
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        with private_switch(NsSwitch, prefix="pvbfn-") as sw:
            yield sw.env
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


def _tlv_rows(env: dict[str, str]) -> list[tuple[str, ...]]:
    return fx.tlv_rows(fn.run(["ovs-ofctl", "--timeout=10", "dump-tlv-map", "br-int"], env=env).stdout)


@pytest.mark.integration
def test_br_int_goes_through_every_state_and_back(env: dict[str, str]) -> None:
    """absent -> empty -> loaded -> absent -> loaded -> empty -> loaded: each state is what the benchmark labels it
    (the fixture's 555 flows and its TLV map, or nothing), however it was reached; a re-made br-int starts clean."""
    n = len(fx.flows(fn.CHASSIS))
    now = "absent"
    for want in ("empty", "loaded", "absent", "loaded", "empty", "loaded"):
        fn.set_state(env, now, want)
        now = want
        bridges = fn.run(["ovs-vsctl", "--timeout=10", "list-br"], env=env).stdout.split()
        assert bridges == ([] if want == "absent" else ["br-int"]), (want, bridges)
        if want == "absent":
            continue
        assert fn.flow_count(env) == (n if want == "loaded" else 0), want
        want_tlv = fx.tlv_rows(fx.fixture_text(fn.CHASSIS, "tlv-map")) if want == "loaded" else []
        assert _tlv_rows(env) == want_tlv, want
    fn.set_state(env, now, "absent")
    assert fn.run(["ovs-vsctl", "--timeout=10", "list-br"], env=env).stdout.split() == []


def _w(rnd: int, state: str, mpps: float) -> dict[str, object]:
    return {"round": rnd, "state": state, "mpps": mpps}


def test_each_window_is_compared_with_its_neighbours_in_time() -> None:
    """Drift cancels and one bad window spoils at most two ratios: each window against the reference state's
    window before it and the one after it (A B A B A ...), whichever of the two comes first in a round."""
    order = ["absent", "empty", "loaded"]
    windows = [_w(0, "absent", 1.0), _w(0, "empty", 2.0), _w(0, "loaded", 1.5),
               _w(1, "absent", 1.2), _w(1, "empty", 4.0), _w(1, "loaded", 4.0)]
    assert fn.round_ratios(windows, "mpps", "loaded", "empty", order) == [0.75, 0.375, 1.0]
    assert fn.round_ratios(windows, "mpps", "empty", "absent", order) == pytest.approx([2.0, 2.0 / 1.2, 4.0 / 1.2])
    assert fn.round_ratios(windows, "mpps", "absent", "empty", order) == pytest.approx([0.5, 0.6, 0.3])
    assert fn.round_ratios(windows, "mpps", "absent", "empty", ["empty", "absent"]) == pytest.approx([0.5, 0.25,
                                                                                                     0.3])
    rows = fn.summarise([{**w, "switch": "pyvswitch", "load": "max", "cycles_per_packet": None,
                          "proc_cycles_per_packet": None} for w in windows], order)
    assert rows[0]["mpps_loaded_over_empty"] == 0.75
    assert (rows[0]["mpps_loaded_over_empty_min"], rows[0]["mpps_loaded_over_empty_max"]) == (0.375, 1.0)
    assert fn.verdict(rows)["met"] is False
    assert fn.ratio_pairs(order) == [("loaded", "empty"), ("empty", "absent"), ("loaded", "absent")]


RAW = """\
thread (11): datapath;Thread.run (threading.py:982);Datapath._run (vswitch/datapath.py:421);\
Datapath.poll_once (vswitch/datapath.py:333);SystemPort.tx_burst (backends/system.py:661) 6
thread (11): datapath;Thread.run (threading.py:982);Datapath._run (vswitch/datapath.py:421);\
Datapath.poll_once (vswitch/datapath.py:329);TapPort.rx_burst (backends/tap.py:90) 2
thread (11): datapath;Thread.run (threading.py:982);Datapath._run (vswitch/datapath.py:410) 2
thread (12): openflow-br-int;Thread.run (threading.py:982);OfAgent._run (vswitch/openflow/agent.py:300) 10
"""


def test_py_spy_samples_are_counted_by_thread_and_function() -> None:
    """Each thread's samples apart; a function's lines are one function; self is the top of the stack."""
    by_thread = parse_raw(RAW)
    assert set(by_thread) == {"datapath", "openflow-br-int"}
    dp = by_thread["datapath"]
    assert dp.total == 10
    assert dp.self_["SystemPort.tx_burst (backends/system.py)"] == 6
    assert dp.incl["Datapath.poll_once (vswitch/datapath.py)"] == 8
    assert dp.self_["Datapath._run (vswitch/datapath.py)"] == 2
    rows = compare({"empty": dp, "loaded": dp})
    assert rows[0] == {"function": "SystemPort.tx_burst (backends/system.py)", "self_pct_empty": 60.0,
                       "incl_pct_empty": 60.0, "self_pct_loaded": 60.0, "incl_pct_loaded": 60.0}


def test_an_ovsdb_server_left_by_a_killed_daemon_is_stopped_and_no_other(tmp_path: object) -> None:
    """The benchmark's clean-up stops the ovsdb-server its rundir's pidfile names (a daemon SIGKILLed while it
    compiles leaves it running) and leaves alone a process that only reuses the pid."""
    import sys

    from bench.openflow import stop_orphan_ovsdb

    rundir = str(tmp_path)
    pidfile = f"{rundir}/ovsdb-server.pid"
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--pidfile={pidfile}"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(pidfile, "w") as f:
            f.write(f"{other.pid}\n")
        stop_orphan_ovsdb(rundir)
        assert other.poll() is None                 # its command line names no such pidfile
        with open(pidfile, "w") as f:
            f.write(f"{orphan.pid}\n")
        stop_orphan_ovsdb(rundir)
        assert orphan.wait(5) == -15                # SIGTERM
    finally:
        for p in (orphan, other):
            p.kill()
            p.wait()
