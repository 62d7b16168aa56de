"""Patch ports: one end of a pair that joins two bridges of the datapath, with no device behind it.

OVSDB ``Interface.type = "patch"`` with ``options:peer=<the other end>`` (Open vSwitch's semantics): a
frame output to one end enters the peer's bridge as if received on the peer. Nothing is received from
or sent to a device; the datapath does the crossing:

* an OpenFlow output to a patch port continues the translation in the peer's bridge
  (``xlate.translate``: one megaflow covers both bridges);
* a frame the L2 switch (NORMAL) queues for a patch port is copied, its egress VLAN edit applied, and
  processed again in the same iteration with the peer as its ingress port (``dpif.patch``).

A port whose peer names no patch port naming it back is unpaired: it stays in its bridge (it has an
OpenFlow port number), forwards nothing, and says why in ``error`` as OVS does.
"""

from __future__ import annotations

from backends.port import DevicelessPort, PortError


class PatchPort(DevicelessPort):
    """An end of a patch port pair (``peer``: the other end's name)."""

    type = "patch"

    def __init__(self, name: str, peer: str = "") -> None:
        if not peer:
            raise PortError(f"{name}: patch type requires valid 'peer' argument")
        if peer == name:
            raise PortError(f"{name}: patch peer must not be self")
        super().__init__(name)
        self.peer = str(peer)
        #: set by the datapath: the peer exists and names this port back
        self.paired = False

    def set_paired(self, paired: bool) -> None:
        """The datapath found (or lost) the peer; ``error`` changes with it."""
        if paired != self.paired:
            self.paired = paired
            self.changed()

    @property
    def error(self) -> str:
        """OVS's words for an unpaired patch port."""
        return "" if self.paired else f"No usable peer '{self.peer}' exists in 'netdev' datapath."

    def status(self) -> dict[str, str] | None:
        """A patch port has no device status (OVS leaves ``Interface.status`` empty)."""
        return {}
