"""The dump normaliser the OVN-fixture tests compare with (``tests/ofctl_text.py``), on the fixture itself."""

from __future__ import annotations

from ofctl_text import FlowLine, fixture, flow_lines


def test_the_ovn_fixture_parses_into_its_documented_flows_and_tables() -> None:
    a, b = flow_lines(fixture("flows-chA.txt")), flow_lines(fixture("flows-chB.txt"))
    assert len(a) + len(b) == 1130                       # the fixture's README: 1,130 flows
    assert len({f.table for f in a} | {f.table for f in b}) == 52      # ... in 52 tables
    first = a[0]
    assert "in_port=1" in first.match and "table=0" in first.match and "priority=100" in first.match
    assert first.actions.startswith("move:NXM_NX_TUN_ID[0..23]->OXM_OF_METADATA[0..23],")


def test_order_and_statistics_do_not_matter_but_match_and_actions_do() -> None:
    ours = flow_lines(" cookie=0x5, duration=1.2s, table=3, n_packets=7, n_bytes=420, idle_age=1, "
                      "priority=10,reg0=0x1,ip actions=resubmit(,4)")
    theirs = flow_lines("cookie=0x5, table=3, priority=10,ip,reg0=0x1 actions=resubmit(,4)")
    assert ours == theirs
    other = flow_lines("cookie=0x5, table=3, priority=10,ip,reg0=0x2 actions=resubmit(,4)")
    assert ours != other and ours[0].actions == other[0].actions
    assert flow_lines("NXST_FLOW reply (xid=0x4):\n") == []
    assert isinstance(ours[0], FlowLine)


def test_dec_ttl_with_empty_parentheses_is_dec_ttl() -> None:
    old = flow_lines("table=21, priority=74,ip actions=dec_ttl(),resubmit(,22)")    # the fixture's OVS wrote this
    new = flow_lines("table=21, priority=74,ip actions=dec_ttl,resubmit(,22)")      # OVS 3.1 dumps this
    assert old == new and old[0].actions == "dec_ttl,resubmit(,22)"
    assert flow_lines("priority=1 actions=dec_ttl(1,2)")[0].actions == "dec_ttl(1,2)"   # controller ids kept
