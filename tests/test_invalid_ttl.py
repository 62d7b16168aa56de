"""``dec_ttl`` at TTL 0 or 1, past the translator: the frame goes to the controllers that asked for packet-ins of
reason ``invalid_ttl`` (SET_ASYNC; OVS's default asks for none), and when none did it ends there, counted as
``invalid_ttl_no_controller``. A real OpenFlow agent (``vswitch.openflow.agent``) over a test datapath, with two
raw OpenFlow 1.3 controllers."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from ofproto.rules import DecTtl, Flow, Instructions, Match, Output
from tests.test_openflow_async import until_barrier
from tests.test_openflow_flows import Controller
from tests.test_xlate import rig
from tests.test_xlate_nicira import tcp
from vswitch.openflow.agent import OfAgent
from vswitch.openflow.codec import OFP13, Msg

OFPR_INVALID_TTL = 2


def on_agent(agent: OfAgent, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the agent's thread (which owns the flow tables)."""
    fut: Future = Future()
    agent._calls.append((fn, fut))
    agent._wake()
    return fut.result(10)


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_invalid_ttl_goes_to_the_controllers_that_asked_and_is_counted_otherwise(tmp_path) -> None:  # noqa: ANN001
    with rig() as r:
        ports = {f"p{i}": SimpleNamespace(ofport=i + 1, port_no=i, name=f"p{i}", admin_up=True,
                                          port=SimpleNamespace(mac=f"02:00:00:00:00:0{i}", link_up=True))
                 for i in range(4)}
        agent = OfAgent(SimpleNamespace(name="brt", dp=r.dp, ports=ports), str(tmp_path), lambda: 1)
        try:
            agent.configure("secure", [(f"punix:{tmp_path}/a", 5.0), (f"punix:{tmp_path}/b", 5.0)])
            a, b = Controller(f"{tmp_path}/a"), Controller(f"{tmp_path}/b")
            for ctl in (a, b):
                until_barrier(ctl, 9)

            def install() -> None:
                agent.flows.tables.add(Flow(0, 1, Match(), Instructions(apply=(DecTtl(), Output(2)))))
                agent.flows.push()
            on_agent(agent, install)
            dropped = lambda: r.dp.dp_drops["invalid_ttl_no_controller"]  # noqa: E731

            def send(frame: bytes) -> None:
                r.ports[0].inbox.append(frame)
                assert r.dp.poll_once() == 1
            send(tcp(ttl=64))
            assert r.ports[1].sent == [tcp(ttl=63)]             # decremented, out of OpenFlow port 2
            send(tcp(ttl=1))                                     # neither asked (OVS's default): counted
            wait_until("the drop counted", lambda: dropped() == 1)
            assert not r.dp.packet_ins and r.ports[1].sent == [tcp(ttl=63)]
            a.send(Msg(OFP13, "set_async", 3, {
                "packet_in_master": 1 << OFPR_INVALID_TTL, "packet_in_slave": 0, "port_status_master": 7,
                "port_status_slave": 0, "flow_removed_master": 15, "flow_removed_slave": 0}))
            until_barrier(a, 10)
            send(tcp(ttl=1))
            pi = a.wait("packet_in")
            assert (pi.reason, pi.table_id, pi.data, pi.match) == (OFPR_INVALID_TTL, 0, tcp(ttl=1), {"in_port": 1})
            assert not [m for m in until_barrier(b, 11) if m.type == "packet_in"]   # b did not ask
            assert dropped() == 1
        finally:
            agent.close()
