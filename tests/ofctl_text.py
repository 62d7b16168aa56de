"""``ovs-ofctl dump-flows`` text, normalised for comparing two switches' dumps (or a dump with the OVN
fixture, ``tests/fixtures/ovn-23.03-flows``: a copy of ``../shared/fixtures/ovn-23.03-flows``, so a clone
alone runs the tests): per flow, the match tokens as a set (OVS and pyvswitch
may order them differently), ``cookie``/``table``/``priority`` among them, statistics dropped, and the
actions text as written (``ovs-ofctl`` prints actions in one canonical form; the one spelling OVS versions differ in,
``dec_ttl()`` for ``dec_ttl`` as OVN 23.03's OVS printed it, is made OVS 3.1's)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "ovn-23.03-flows")
#: tokens that are counters or ages, not part of a flow's identity
STATS = ("duration", "n_packets", "n_bytes", "idle_age", "hard_age")


@dataclass(frozen=True)
class FlowLine:
    """One flow of a dump: ``match`` holds every ``key=value`` / flag token before ``actions=``."""

    match: frozenset[str]
    actions: str

    @property
    def table(self) -> int:
        return int(next((t.split("=", 1)[1] for t in self.match if t.startswith("table=")), "0"))


def flow_lines(text: str) -> list[FlowLine]:
    """Every flow line of ``text`` (header lines such as ``NXST_FLOW reply`` are skipped)."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or " reply " in line or "actions=" not in line:
            continue
        head, actions = line.split("actions=", 1)
        tokens = [t.strip() for t in head.replace(" ", ",").split(",") if t.strip()]
        match = frozenset(t for t in tokens if t.split("=", 1)[0] not in STATS)
        out.append(FlowLine(match, _canonical_actions(actions.strip())))
    return out


def _canonical_actions(actions: str) -> str:
    """``actions`` as OVS 3.1 prints them: a bare ``dec_ttl`` (an older OVS wrote ``dec_ttl()``)."""
    return re.sub(r"\bdec_ttl\(\)", "dec_ttl", actions)


def fixture(name: str) -> str:
    """The text of one fixture file (e.g. ``flows-chA.txt``)."""
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()
