"""A differential sweep: the same script of ``ovs-ofctl`` commands, in every OpenFlow version (plain, 1.0 to 1.5),
against the pyvswitch daemon and a real ovs-vswitchd 3.1 (netdev datapath, its own rundir and namespace), each with
bridge ``BR`` and two internal ports on OpenFlow ports 1 and 2. Every step's exit code and normalised output
(xids, durations, timing-dependent counters, datapath ids and addresses blanked; hash-ordered lines sorted) must be
equal, or be listed in ``KNOWN`` with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from tests.netutil import unique
from tests.ofctl_text import flow_lines
from tests.switchutil import Switch, private_switch
from tests.test_bridge_identity import RealOvs, running_ovs

pytestmark = pytest.mark.integration

BR = unique("bsw")
PORTS = (unique("psw"), unique("psw"))
VERSIONS = ("plain", "OpenFlow10", "OpenFlow11", "OpenFlow12", "OpenFlow13", "OpenFlow14", "OpenFlow15")

#: (step name, version or "*") -> why pyvswitch's answer differs from OVS 3.1's there
_DOWN = "mod-port down: OVS takes the device down, so its carrier goes (LINK_DOWN, no LIVE); ours only stops " \
        "forwarding (vswitch/bridge.py set_admin_state leaves the device up)"
KNOWN: dict[tuple[str, str], str] = {
    ("dump-desc", "*"): "identity: OVS says Nicira / Open vSwitch / 3.1.0 and DP Description None; ours names "
                        "pyvswitch and the bridge",
    ("desc after down", "*"): _DOWN,
}
_NOFLOOD = "OFPPC_NO_FLOOD (1.0 port-mod) is ignored by ours (agent.py _on_port_mod; flooding in xlate/output.py); " \
           "OVS shows config NO_FLOOD and floods around the port"
_MPLS = "MPLS is not in the action model (ofproto/actions.py, xlate/, dpif/): push_mpls gets OFPBAC_BAD_TYPE " \
        "(1.0: Nicira's OFPBAC_BAD_VENDOR_TYPE); OVS adds the flow"
KNOWN.update({("push_mpls", "*"): _MPLS,
              ("bad in_port", "*"): "packet-out from OpenFlow port 99, which does not exist: OVS 3.1 runs it (any "
                                    "port below 0xff00); ours answers OFPBRC_BAD_PORT (flows.check_packet_out: the "
                                    "datapath takes a packet in on one of its ports only, vswitch/datapath.py)"})
#: dump-table-features is compared on table names, metadata masks and sizes only: ours sends the required
#: properties empty, OVS lists its instructions, next tables, actions, set-field and match fields there
TABLE_FEATURES = re.compile(r"^\s*tables? \d|metadata:|max_entries")
for _v in ("plain", "OpenFlow10"):
    KNOWN.update({("desc after no-flood", _v): _NOFLOOD})
#: versions ours does not speak: every command fails version negotiation (OVS answers them all)
UNSPOKEN = {"OpenFlow11": "pyvswitch speaks OpenFlow 1.0, 1.3, 1.4, 1.5 (hello in channel.py; no 1.1/1.2 codec)",
            "OpenFlow12": "pyvswitch speaks OpenFlow 1.0, 1.3, 1.4, 1.5 (hello in channel.py; no 1.1/1.2 codec)"}

# the files add-flows / replace-flows / diff-flows / add-groups / --bundle read (``write_files``)
FLOWS = [
    "table=0,priority=100,in_port=1,dl_src=02:00:00:00:00:01/ff:ff:ff:ff:ff:00,actions=output:2",
    "table=0,priority=90,ip,nw_src=10.0.0.0/8,nw_dst=192.168.1.1,actions=mod_nw_tos:16,goto_table:1",
    "table=0,priority=80,tcp,tp_dst=0x50/0xfff0,actions=write_actions(output:1),goto_table:2",
    "table=0,priority=70,udp,udp_src=53,actions=clear_actions",
    "table=0,priority=60,reg0=0x5/0xff,metadata=0x1/0xf,actions=set_field:7->reg1,goto_table:3",
    "table=0,priority=50,dl_vlan=10,actions=pop_vlan,output:2",
    "table=0,priority=40,in_port=2,actions=push_vlan:0x8100,set_field:4106->vlan_vid,output:1",
    "table=1,priority=10,ipv6,ipv6_src=2001:db8::/32,actions=resubmit(,2)",
    "table=1,priority=5,cookie=0x10,arp,arp_tpa=10.0.0.1,actions=learn(table=5,idle_timeout=30,"
    "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])",
    "table=2,priority=20,ip,nw_src=10.1.0.1,actions=conjunction(9,1/2)",
    "table=2,priority=20,tcp,tp_src=1000,actions=conjunction(9,2/2)",
    "table=2,priority=20,conj_id=9,ip,actions=output:1",
    "table=3,priority=1,cookie=0x20,ip,actions=ct(commit,zone=5),note:41.42",
]
REPLACE = [
    "table=0,priority=100,in_port=1,dl_src=02:00:00:00:00:01/ff:ff:ff:ff:ff:00,actions=output:2",
    "table=0,priority=55,icmp,icmp_type=8,actions=drop",
    "table=4,priority=5,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=output:1",
]
BAD_BUNDLE = ["table=9,priority=1,actions=output:1", "table=9,priority=2,actions=group:99"]
#: an ARP request for 10.0.0.1 from 02:00:00:00:00:01: table 1's learn flow learns from it
ARP_REQUEST = "ffffffffffff020000000001080600010800060400010200000000010a0000020000000000000a000001"
GROUPS = ["group_id=8,type=all,bucket=output:1,bucket=output:2",
          "group_id=9,type=select,bucket=weight:10,output:2,bucket=weight:20,output:1"]


def script(files: dict[str, str]) -> list[tuple[str, tuple[str, ...]]]:
    """(step name, ovs-ofctl arguments with ``-`` for the bridge and ``@name`` for a file)."""
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("show", ("show", "-")),
        ("dump-desc", ("dump-desc", "-")),
        ("dump-tables", ("dump-tables", "-")),
        ("dump-table-features", ("dump-table-features", "-")),
        ("dump-ports", ("dump-ports", "-")),
        ("dump-ports 1", ("dump-ports", "-", "1")),
        ("dump-ports 77", ("dump-ports", "-", "77")),
        ("dump-ports-desc", ("dump-ports-desc", "-")),
        ("dump-ports-desc 2", ("dump-ports-desc", "-", "2")),
        ("mod-port down", ("mod-port", "-", "1", "down")),
        ("desc after down", ("dump-ports-desc", "-", "1")),
        ("mod-port up", ("mod-port", "-", "1", "up")),
        ("mod-port no-flood", ("mod-port", "-", "2", "no-flood")),
        ("desc after no-flood", ("dump-ports-desc", "-", "2")),
        ("mod-port flood", ("mod-port", "-", "2", "flood")),
        ("mod-port missing", ("mod-port", "-", "77", "down")),
        ("get-frags", ("get-frags", "-")),
        ("set-frags drop", ("set-frags", "-", "drop")),
        ("get-frags drop", ("get-frags", "-")),
        ("set-frags normal", ("set-frags", "-", "normal")),
        ("add-flows", ("add-flows", "-", "@flows")),           # 1.0: no instructions, so refused by ovs-ofctl
        ("add-flows 1.0", ("add-flows", "-", "@flows10")),
        ("dump-flows", ("dump-flows", "-")),
        ("dump-flows table=0", ("dump-flows", "-", "table=0")),
        ("dump-flows cookie", ("dump-flows", "-", "cookie=0x10/-1")),
        ("dump-flows cookie mask", ("dump-flows", "-", "cookie=0x0/0xf")),
        ("dump-flows out_port", ("dump-flows", "-", "out_port=2")),
        ("dump-flows match", ("dump-flows", "-", "ip")),
        ("dump-flows --sort", ("--sort", "dump-flows", "-")),
        ("dump-flows --no-stats", ("--no-stats", "dump-flows", "-", "table=1")),
        ("dump-flows --names", ("--names", "dump-flows", "-", "in_port=1")),
        ("dump-aggregate", ("dump-aggregate", "-")),
        ("dump-aggregate table=2", ("dump-aggregate", "-", "table=2")),
        ("dump-aggregate out_port", ("dump-aggregate", "-", "out_port=1")),
        ("learn by packet-out", ("packet-out", "-", f"in_port=1 packet={ARP_REQUEST} actions=resubmit(,1)")),
        ("learned flow", ("dump-flows", "-", "table=5")),
        ("mod-flows cookie", ("mod-flows", "-", "cookie=0x20/-1,actions=drop")),
        ("dump cookie 0x20", ("dump-flows", "-", "cookie=0x20/-1")),
        ("del-flows cookie", ("del-flows", "-", "cookie=0x10/0xff")),
        ("add-flow", ("add-flow", "-", "table=4,priority=7,ip,nw_dst=10.9.0.0/16,actions=dec_ttl,output:2")),
        ("add-flow flags", ("add-flow", "-", "table=4,priority=8,send_flow_rem,check_overlap,idle_timeout=50,"
                                             "hard_timeout=90,tcp6,actions=output:1")),
        ("add-flow overlap", ("add-flow", "-", "table=4,priority=8,check_overlap,tcp6,actions=output:2")),
        ("add-flow importance", ("add-flow", "-", "table=4,priority=9,importance=5,udp6,actions=output:1")),
        ("mod-flows", ("mod-flows", "-", "table=4,ip,actions=output:1")),
        ("mod-flows strict miss", ("--strict", "mod-flows", "-", "table=4,ip,actions=output:2")),
        ("mod-flows strict", ("--strict", "mod-flows", "-",
                              "table=4,priority=7,ip,nw_dst=10.9.0.0/16,actions=output:2")),
        ("mod-flows adds", ("mod-flows", "-", "table=6,udp,actions=output:1")),
        ("dump table=4,6", ("dump-flows", "-", "table=4")),
        ("del-flows strict miss", ("--strict", "del-flows", "-", "table=0,in_port=1")),
        ("del-flows out_port", ("del-flows", "-", "table=0,out_port=2")),
        ("dump after del out_port", ("dump-flows", "-", "table=0")),
        ("del-flows strict", ("--strict", "del-flows", "-", "table=0,priority=70,udp,udp_src=53")),
        ("del-flows table", ("del-flows", "-", "table=2")),
        ("dump after dels", ("dump-flows", "-")),
        ("diff-flows", ("diff-flows", "-", "@replace")),
        ("replace-flows", ("replace-flows", "-", "@replace")),
        ("dump after replace", ("dump-flows", "-")),
        ("diff-flows same", ("diff-flows", "-", "@replace")),
        ("queue-stats", ("queue-stats", "-")),
        ("queue-stats port", ("queue-stats", "-", "1")),
        ("queue-stats bad port", ("queue-stats", "-", "77")),
        ("queue-stats bad queue", ("queue-stats", "-", "1", "5")),
        ("dump-group-features", ("dump-group-features", "-")),
        ("add-group", ("add-group", "-", "group_id=1,type=all,bucket=output:1,bucket=output:2")),
        ("add-groups", ("add-groups", "-", "@groups")),
        ("dump-groups", ("dump-groups", "-")),
        ("dump-group-stats", ("dump-group-stats", "-")),
        ("mod-group", ("mod-group", "-", "group_id=9,type=select,bucket=weight:5,output:1")),
        ("insert-buckets", ("insert-buckets", "-", "group_id=8,command_bucket_id=last,bucket=bucket_id:7,output:1")),
        ("remove-buckets", ("remove-buckets", "-", "group_id=8,command_bucket_id=first")),
        ("dump-groups 8", ("dump-groups", "-", "8")),
        ("del-groups 9", ("del-groups", "-", "group_id=9")),
        ("dump-groups after", ("dump-groups", "-")),
        ("flow to group", ("add-flow", "-", "table=7,actions=group:1")),
        ("flow to missing group", ("add-flow", "-", "table=7,ip,actions=group:55")),
        ("del-groups", ("del-groups", "-")),
        ("meter-features", ("meter-features", "-")),
        ("add-meter", ("add-meter", "-", "meter=1,pktps,band=type=drop,rate=100")),
        ("add-meter burst", ("add-meter", "-", "meter=4,pktps,burst,stats,band=type=drop,rate=10,burst_size=5")),
        ("add-meter exists", ("add-meter", "-", "meter=1,kbps,band=type=drop,rate=10")),
        ("dump-meters", ("dump-meters", "-")),
        ("meter-stats", ("meter-stats", "-")),
        ("mod-meter", ("mod-meter", "-", "meter=1,kbps,band=type=drop,rate=500")),
        ("mod-meter missing", ("mod-meter", "-", "meter=60,kbps,band=type=drop,rate=500")),
        ("dump-meters 1", ("dump-meters", "-", "meter=1")),
        ("del-meter 4", ("del-meter", "-", "meter=4")),
        ("dump-meters after", ("dump-meters", "-")),
        ("flow to meter", ("add-flow", "-", "table=7,actions=meter:1,output:1")),
        ("del-meters", ("del-meters", "-")),
        ("dump-tlv-map", ("dump-tlv-map", "-")),
        ("add-tlv-map", ("add-tlv-map", "-", "{class=0xffff,type=0x1,len=4}->tun_metadata0")),
        ("dump-tlv-map after", ("dump-tlv-map", "-")),
        ("add-tlv-map again", ("add-tlv-map", "-", "{class=0xffff,type=0x2,len=4}->tun_metadata0")),
        ("flow on tun_metadata0", ("add-flow", "-", "table=11,tun_metadata0=0x1234,actions=drop")),
        ("flow on unmapped option", ("add-flow", "-", "table=11,tun_metadata1=0x1,actions=drop")),
        ("dump tlv flows", ("dump-flows", "-", "table=11")),
        ("del-tlv-map in use", ("del-tlv-map", "-", "{class=0xffff,type=0x1,len=4}->tun_metadata0")),
        ("del tlv flows", ("del-flows", "-", "table=11")),
        ("del-tlv-map", ("del-tlv-map", "-")),
        ("table 255", ("add-flow", "-", "table=255,actions=drop")),
        ("bad table", ("add-flow", "-", "table=254,actions=drop")),     # OVS's hidden table
        ("del hidden table", ("del-flows", "-", "table=254")),
        ("bad in_port", ("packet-out", "-", f"in_port=99 packet={ARP_REQUEST} actions=output:1")),
        ("group to missing group", ("add-group", "-", "group_id=3,type=all,bucket=actions=group:99")),
        ("mod missing group", ("mod-group", "-", "group_id=98,type=all,bucket=actions=output:1")),
        ("groups after bad", ("dump-groups", "-")),
        ("del missing meter", ("del-meter", "-", "meter=77")),
        ("bad goto", ("add-flow", "-", "table=5,actions=goto_table:2")),
        ("write_actions", ("add-flow", "-", "table=8,actions=write_actions(output:1)")),
        ("set_field", ("add-flow", "-", "table=8,ip,actions=set_field:10.0.0.9->ip_dst,output:1")),
        ("push_mpls", ("add-flow", "-", "table=10,ip,actions=push_mpls:0x8847,output:1")),
        ("del push_mpls", ("del-flows", "-", "table=10")),
        ("add-flows bad", ("add-flows", "-", "@badbundle")),        # not a bundle: the first flow stays
        ("after bad add-flows", ("dump-flows", "-", "table=9")),
        ("del table 9", ("del-flows", "-", "table=9")),
        ("--bundle bad", ("--bundle", "add-flows", "-", "@badbundle")),
        ("after bad bundle", ("dump-flows", "-", "table=9")),
        ("get-frags end", ("get-frags", "-")),
        ("--bundle add-flows", ("--bundle", "add-flows", "-", "@replace")),
        ("dump-flows end", ("dump-flows", "-")),
        ("del-flows", ("del-flows", "-")),
        ("dump-flows empty", ("dump-flows", "-")),
    ]
    return [(name, tuple(files[a[1:]] if a.startswith("@") else a for a in args)) for name, args in steps]


_BLANK = [
    (re.compile(r"xid=0x[0-9a-f]+"), "xid=?"),
    (re.compile(r"unix:\S+\.mgmt"), "unix:?.mgmt"),
    (re.compile(r"duration[=:][0-9.]+s"), "duration=?"),
    (re.compile(r"dpid:?[0-9a-f]{16}"), "dpid:?"),
    (re.compile(r"addr:[0-9a-f:]{17}"), "addr:?"),
    (re.compile(r"\b(rx|tx) pkts=\d+, bytes=\d+, drop=\d+, errs=\d+"), r"\1 pkts=?"),
    (re.compile(r"\b(n_packets|n_bytes|packet_count|byte_count|flow_count|active|lookup|matched)=\d+"), r"\1=?"),
]


def _tables(lines: list[str]) -> list[str]:
    """dump-tables as runs of tables with the same name suffix and features, without the per-table counters:
    lookups count the devices' own traffic, and ovs-ofctl's ``ditto`` ranges follow the counters."""
    head: list[str] = []
    tables: dict[int, list[str]] = {}    # table -> [name part, feature lines...]
    cur: list[int] = []
    before: list[str] = []               # the features of the table printed last
    for ln in filter(str.strip, lines):
        one = re.match(r"\s*table (\d+)(.*?):( ditto)?$", ln)
        many = re.match(r"\s*tables (\d+)\.\.\.(\d+): ditto$", ln)
        if one or many:
            before = tables[cur[-1]][1:] if cur else []
            if one:
                cur = [int(one.group(1))]
                tables[cur[0]] = [one.group(2), *(before if one.group(3) else [])]
            else:
                cur = list(range(int(many.group(1)), int(many.group(2)) + 1))
                tables.update({t: ["", *before] for t in cur})
        elif not cur:
            head.append(ln)
        elif ln.strip() == "(same features)":
            tables[cur[0]] += before
        elif "active=" not in ln:
            tables[cur[0]].append(ln)
    out, start, ids = head, None, sorted(tables)
    for i, t in enumerate(ids):
        start = t if start is None else start
        if i + 1 == len(ids) or tables[ids[i + 1]] != tables[t]:
            out.append(f"tables {start}-{t}{tables[t][0]}: " + " | ".join(tables[t][1:]))
            start = None
    return out


def _normal(cmd: str, rc: int, out: str) -> tuple[int, list[str]]:
    """A step's exit code and output, comparable between switches: dump-flows as ``flow_lines``, other outputs
    with the ``_BLANK`` parts blanked and lines sorted."""
    lines = list(out.splitlines())
    if cmd == "dump-flows":   # the flows as sets of match tokens, and whatever else it printed (errors)
        lines = [*map(repr, flow_lines(out)), *(ln for ln in lines if "actions=" not in ln and " reply " not in ln)]
    if cmd == "dump-tables":
        lines = _tables(lines)
    if cmd == "dump-table-features":   # KNOWN: only the names, metadata masks and sizes are compared
        lines = _tables([ln for ln in lines if TABLE_FEATURES.search(ln)])
    for pat, rep in _BLANK:
        lines = [pat.sub(rep, ln) for ln in lines]
    return rc, sorted(ln.rstrip() for ln in lines if ln.strip())


def _ofctl(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = subprocess.run(["ovs-ofctl", "--timeout=10", *args], capture_output=True, text=True, env=env, timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


def _two_internal_ports(vsctl, bridge: str) -> None:  # noqa: ANN001 - Switch.vsctl / RealOvs.vsctl
    p1, p2 = PORTS
    vsctl("add-port", bridge, p1, "--", "set", "Interface", p1, "type=internal", "ofport_request=1",
          "--", "add-port", bridge, p2, "--", "set", "Interface", p2, "type=internal", "ofport_request=2")


def ovs_ports_up(ovs: RealOvs) -> None:
    """OVS leaves its internal devices down (PORT_DOWN, LINK_DOWN); pyvswitch brings them up: up on both."""
    for dev in (BR, *PORTS):
        ovs.run("ip", "netns", "exec", ovs.ns, "ip", "link", "set", "dev", dev, "up")


@pytest.fixture(scope="module")
def real_ovs() -> Iterator[RealOvs]:
    with running_ovs("realovs-sw-", BR) as ovs:
        _two_internal_ports(ovs.vsctl, BR)
        ovs_ports_up(ovs)
        yield ovs


@pytest.fixture(scope="module")
def sw() -> Iterator[Switch]:
    with private_switch(prefix="pvsw-") as s:
        s.vsctl("add-br", BR)
        _two_internal_ports(s.vsctl, BR)
        yield s


def write_files(d: str) -> dict[str, str]:
    """The files the script reads, written in ``d``: name -> path."""
    flows10 = [f.replace("push_vlan:0x8100,set_field:4106->vlan_vid", "mod_vlan_vid:10") for f in FLOWS
               if not re.search("goto_table|_actions|metadata", f)]   # what 1.0 (with NXM) expresses
    out = {}
    for name, lines in (("flows", FLOWS), ("flows10", flows10), ("replace", REPLACE), ("groups", GROUPS),
                        ("badbundle", BAD_BUNDLE)):
        out[name] = os.path.join(d, name)
        with open(out[name], "w") as f:
            f.write("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def files() -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="sweep-") as d:
        yield write_files(d)


def run_script(env: dict[str, str], version: str, files: dict[str, str]) -> list[tuple[int, list[str]]]:
    o = () if version == "plain" else ("-O", version)
    for reset in ("del-flows", "del-groups"):
        _ofctl(env, *o, reset, BR)
    _ofctl(env, "-O", "OpenFlow13", "del-meters", BR)
    _ofctl(env, "-O", "OpenFlow13", "del-tlv-map", BR)
    out = []
    for _name, args in script(files):
        argv = [BR if a == "-" else a for a in args]
        cmd = next(a for a in args if not a.startswith("--"))
        out.append(_normal(cmd, *_ofctl(env, *o, *argv)))
    return out


@pytest.mark.parametrize("version", [v for v in VERSIONS if v not in UNSPOKEN])
def test_ofctl_answers_as_ovs(sw: Switch, real_ovs: RealOvs, files: dict[str, str], version: str) -> None:
    """Every step of the script prints what OVS prints and exits as it does, but for the ``KNOWN`` differences."""
    ours, theirs = run_script(sw.env, version, files), run_script(real_ovs.env, version, files)
    diffs, stale = [], []
    for (name, _args), a, b in zip(script(files), ours, theirs, strict=True):
        known = KNOWN.get((name, version)) or KNOWN.get((name, "*"))
        if a != b and not known:
            diffs.append((name, a, b))
        elif a == b and known:
            stale.append(name)   # fixed: its KNOWN entry goes
    if os.environ.get("SWEEP_REPORT"):
        for name, a, b in diffs:
            print(f"=== {version} {name}\n--- ours rc={a[0]}\n" + "\n".join(a[1]) + f"\n--- ovs rc={b[0]}\n"
                  + "\n".join(b[1]))
    assert not diffs, [d[0] for d in diffs]
    assert not stale, f"equal now, drop from KNOWN: {stale}"


@pytest.mark.parametrize("version", sorted(UNSPOKEN))
def test_unspoken_versions_fail_negotiation(sw: Switch, real_ovs: RealOvs, version: str) -> None:
    """OpenFlow 1.1 / 1.2 (``UNSPOKEN``): OVS answers; ours refuses the version in the hello, as a switch that
    does not speak it must (and the next connection, in a version it speaks, works)."""
    assert _ofctl(real_ovs.env, "-O", version, "show", BR)[0] == 0
    rc, out = _ofctl(sw.env, "-O", version, "show", BR)
    assert rc == 1 and "version negotiation failed" in out, out
    assert _ofctl(sw.env, "-O", "OpenFlow13", "show", BR)[0] == 0


def _monitor(env: dict[str, str], opts: tuple[str, ...], args: tuple[str, ...],
             events: list[tuple[str, ...]], until: str, tries: int = 20) -> list[str]:
    """What ``ovs-ofctl [opts] monitor BR args`` prints while ``events`` (ovs-ofctl commands) run, repeated
    until the monitor printed ``until`` (it may not have connected yet), at most ``tries`` times; a flow monitor
    (``watch:``) first prints its (empty) initial reply, and the events wait for it."""
    proc = subprocess.Popen(["ovs-ofctl", *opts, "monitor", BR, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while "watch:" in args and not lines and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        for _ in range(tries):
            for ev in events:
                _ofctl(env, *opts, *(BR if a == "-" else a for a in ev))
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and not any(until in ln for ln in lines):
                time.sleep(0.05)
            if any(until in ln for ln in lines) or proc.poll() is not None:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)
    text = [ln.rstrip() for ln in lines if "fatal_signal" not in ln]
    for pat, rep in _BLANK:
        text = [pat.sub(rep, ln) for ln in text]
    return text[:text.index(next(ln for ln in text if until in ln)) + 2] if any(until in ln for ln in text) else text


MONITORS = {
    # a packet-out whose action is CONTROLLER: the monitor's packet-in (1.0's OFPT_PACKET_IN, 1.3+'s NXT_PACKET_IN2)
    "packet-out": (("65535",), [("packet-out", "-", f"in_port=1 packet={ARP_REQUEST} actions=controller")],
                   "PACKET_IN"),
    # a packet-out sent through the tables, to a flow whose action is CONTROLLER
    "flow": (("65535",), [("add-flow", "-", "table=0,priority=9,arp,actions=controller"),
                          ("packet-out", "-", f"in_port=1 packet={ARP_REQUEST} actions=table")], "PACKET_IN"),
    # Nicira's flow monitor (ovs-ofctl monitor watch:): the flows added and deleted
    "watch": (("watch:",), [("add-flow", "-", "table=2,priority=3,ip,actions=output:1"),
                            ("del-flows", "-", "table=2")], "event=DELETED"),
}
_NO_PIN = "a packet-out's own CONTROLLER action: OVS sends a 1.3+ monitor NXT_PACKET_IN2 (1.3: via action, " \
          "1.5: via packet_out); ours sends none to a 1.3+ connection (vswitch/openflow/agent.py's packet-in " \
          "path takes it, having no flow, for a table miss)"
#: (what, version) -> why ours differs (the test checks the difference is still there)
KNOWN_MONITOR = {("packet-out", "OpenFlow13"): _NO_PIN, ("packet-out", "OpenFlow15"): _NO_PIN,
                 ("flow", "OpenFlow15"): "1.5's packet-in reason for a packet a packet-out sent through the tables: "
                                         "OVS says OFPR_PACKET_OUT (via packet_out), ours OFPR_ACTION (via action): "
                                         "the packet-in does not know it came from a packet-out (xlate/, "
                                         "vswitch/openflow/packetin2.py)"}


@pytest.mark.parametrize("what", sorted(MONITORS))
@pytest.mark.parametrize("version", ["plain", "OpenFlow10", "OpenFlow13", "OpenFlow15"])
def test_monitor_prints_what_ovs_prints(sw: Switch, real_ovs: RealOvs, version: str, what: str) -> None:
    """``ovs-ofctl monitor``: packet-ins of packet-outs, and Nicira's flow monitor's flow events, as OVS prints
    them (or a ``KNOWN_MONITOR`` difference, which must still be there: a fix drops its entry)."""
    o = () if version == "plain" else ("-O", version)
    args, events, until = MONITORS[what]
    for env in (sw.env, real_ovs.env):
        _ofctl(env, *o, "del-flows", BR)
    theirs = _monitor(real_ovs.env, o, args, events, until)
    assert any(until in ln for ln in theirs), theirs        # OVS printed the event: the script is sound
    known = KNOWN_MONITOR.get((what, version))
    ours = _monitor(sw.env, o, args, events, until, tries=3 if known else 20)
    assert (ours != theirs) if known else (ours == theirs), (known, ours, theirs)


def _snoop(env: dict[str, str]) -> tuple[int | None, list[str]]:
    """``ovs-ofctl snoop BR`` for at most 3 s (exit code None: it was still snooping), its output normalised."""
    try:
        proc = subprocess.run(["ovs-ofctl", "snoop", BR], capture_output=True, text=True, env=env, timeout=3)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, _normal("snoop", 0, out)[1]
    return proc.returncode, _normal("snoop", 0, proc.stdout + proc.stderr)[1]


def test_snoop_without_a_controller_as_ovs(sw: Switch, real_ovs: RealOvs) -> None:
    """``ovs-ofctl snoop``: both listen on ``BR.snoop`` in their rundir; with no controller to snoop on, both
    close the snooper and ovs-ofctl fails ("Connection reset by peer" or "Broken pipe", as the close meets
    ovs-ofctl's hello: a race on either switch; OVS mostly takes the hello first, ours mostly does not)."""
    assert os.path.exists(os.path.join(real_ovs.rundir, f"{BR}.snoop"))
    assert os.path.exists(os.path.join(sw.rundir, f"{BR}.snoop"))
    (rc, out), (ovs_rc, ovs_out) = _snoop(sw.env), _snoop(real_ovs.env)
    assert rc == ovs_rc == 1, (out, ovs_out)
    closed = ("Connection reset by peer", "Broken pipe")
    assert any(c in ovs_out[0] for c in closed) and any(c in out[0] for c in closed), (out, ovs_out)
