"""``ofproto/trace`` answers (OVS 3.1's and pyvswitch's) reduced to what both define, for comparing them whole:
the pipeline section (from the bridge's header to ``Final flow:``) and the ``Datapath actions:`` line, with OVS's
datapath port numbers turned into OpenFlow ones.

What is left out, and why (each is what OVS's trace shows of OVS's own machinery, not of the pipeline):

* a select group's ``-> bucket N: score S`` lines: the scores are OVS's hash of the flow (pyvswitch hashes
  otherwise), only the bucket chosen (``-> using bucket N``) is compared;
* after the first ``ct(...)`` action: OVS recirculates (and traces the rest after ``====``), pyvswitch has no
  conntrack yet (its walk ends there with ``conntrack_unavailable``);
* a Geneve port's output details (``-> output to native tunnel``, ``-> tunneling ...``) and the underlay bridge's
  walk behind it: OVN's tunnel is a Geneve port in OVS, an internal port in pyvswitch (no tunnel ports: issue 19).
"""

from __future__ import annotations

import re

_SCORE = re.compile(r"^\s*-> bucket \d+: score \d+$")
_TUNNEL = ("-> output to native tunnel", "-> tunneling to ", "-> tunneling from ")


def pipeline(text: str, stop_at_ct: bool = True) -> list[str]:
    """The pipeline section of a trace answer: the lines after the first bridge's header up to ``Final flow:``
    (OVS's select scores, tunnel details and underlay bridge left out), up to and with the first ``ct(`` line."""
    lines = text.split("\n====", 1)[0].splitlines()
    start = next((i + 2 for i, ln in enumerate(lines) if ln.startswith('bridge("')), len(lines))
    out: list[str] = []
    skip_indent = -1              # inside an underlay bridge's section: its lines are deeper than its header
    for ln in lines[start:]:
        if ln.startswith(("Final flow:", "Megaflow:", "Datapath actions:")):
            break
        body = ln.strip()
        indent = len(ln) - len(ln.lstrip())
        if skip_indent >= 0:
            if not body or indent > skip_indent or body.startswith("---"):
                continue
            skip_indent = -1
        if _SCORE.match(ln) or body.startswith(_TUNNEL):
            continue
        if body.startswith('bridge("br-phy")'):
            skip_indent = indent
            if out and not out[-1].strip():
                out.pop()
            continue
        out.append(ln.rstrip())
        if stop_at_ct and body.startswith("ct("):
            break
    while out and not out[-1].strip():
        out.pop()
    return out


def datapath_actions(text: str, dp_to_of: dict[int, int] | None = None) -> str:
    """The ``Datapath actions:`` line's value; ``dp_to_of`` renames OVS's datapath ports (the other ports, an
    underlay's, are kept as they are)."""
    line = next((ln for ln in text.split("\n====", 1)[0].splitlines() if ln.startswith("Datapath actions:")), "")
    value = line.split(":", 1)[1].strip() if line else ""
    if dp_to_of is None:
        return value
    parts, depth, tok = [], 0, ""
    for ch in value + ",":
        if ch == "," and depth == 0:
            parts.append(str(dp_to_of.get(int(tok), tok)) if tok.isdigit() else tok)
            tok = ""
            continue
        depth += (ch == "(") - (ch == ")")
        tok += ch
    return ",".join(parts)
