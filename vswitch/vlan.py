"""Port VLAN configuration with Open vSwitch's meaning, compiled into the classifier's ``vlan_map``.

OVS semantics (``vswitch.xml``, Port table):

* ``access`` (default when ``tag`` is set): untagged and priority-tagged frames belong to
  VLAN ``tag``; tagged frames are dropped; frames leave untagged.
* ``trunk`` (default without ``tag``): frames carry their VLAN (untagged = VLAN 0); only
  VLANs in ``trunks`` are allowed (all when ``trunks`` is empty); frames leave tagged
  (VLAN 0 untagged).
* ``native-tagged``: like trunk, but untagged frames belong to VLAN ``tag``; frames of VLAN
  ``tag`` leave tagged.
* ``native-untagged``: like native-tagged, but frames of VLAN ``tag`` leave untagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from classifier.l2switch import EGRESS_NOT_MEMBER, EGRESS_PORT_DOWN, INGRESS_DENY

VLAN_MODES = ("access", "trunk", "native-tagged", "native-untagged")
N_VIDS = 4096


class VlanConfigError(ValueError):
    """A VLAN setting that OVS would reject; the message names the setting."""


@dataclass(frozen=True)
class VlanConfig:
    """``Port.tag``, ``Port.trunks`` and ``Port.vlan_mode`` of one port."""

    tag: int | None = None
    trunks: tuple[int, ...] = field(default=())
    vlan_mode: str | None = None

    def __post_init__(self) -> None:
        if self.tag is not None and not 0 <= self.tag <= 4095:
            raise VlanConfigError(f"tag {self.tag} is outside 0..4095")
        for v in self.trunks:
            if not 0 <= v <= 4095:
                raise VlanConfigError(f"trunk VLAN {v} is outside 0..4095")
        if self.vlan_mode is not None and self.vlan_mode not in VLAN_MODES:
            raise VlanConfigError(f"vlan_mode {self.vlan_mode!r} is not one of {', '.join(VLAN_MODES)}")
        object.__setattr__(self, "trunks", tuple(sorted(set(self.trunks))))

    @property
    def mode(self) -> str:
        """The effective VLAN mode (OVS picks access with a tag, trunk without)."""
        if self.vlan_mode:
            return self.vlan_mode
        return "access" if self.tag is not None else "trunk"

    def describe(self) -> str:
        """Short human form, e.g. ``access tag=10`` or ``trunk trunks=10,20``."""
        parts = [self.mode]
        if self.tag is not None:
            parts.append(f"tag={self.tag}")
        if self.trunks:
            parts.append("trunks=" + ",".join(map(str, self.trunks)))
        return " ".join(parts)


def fill_vlan_map(vlan_map: np.ndarray, port_no: int, cfg: VlanConfig | None, up: bool) -> None:
    """Write the ingress and egress rows of ``port_no`` (``cfg`` None: the slot is unused)."""
    ingress = vlan_map[port_no, 0]
    egress = vlan_map[port_no, 1]
    if cfg is None:
        ingress[:] = INGRESS_DENY
        egress[:] = EGRESS_NOT_MEMBER
        return
    if not up:
        ingress[:] = INGRESS_DENY
        egress[:] = EGRESS_PORT_DOWN
        return
    vids = np.arange(N_VIDS, dtype=np.int16)
    allowed = np.zeros(N_VIDS, dtype=bool)
    if cfg.trunks:
        allowed[list(cfg.trunks)] = True
    else:
        allowed[:] = True
    mode = cfg.mode
    tag = cfg.tag or 0
    if mode == "access":
        ingress[:] = INGRESS_DENY
        ingress[0] = tag
        egress[:] = EGRESS_NOT_MEMBER
        egress[tag] = 0
        return
    if mode == "trunk":
        ingress[:] = np.where(allowed, vids, INGRESS_DENY)
        egress[:] = np.where(allowed, vids, EGRESS_NOT_MEMBER)
        return
    # native-tagged / native-untagged: the native VLAN is implicitly allowed.
    allowed[tag] = True
    ingress[:] = np.where(allowed, vids, INGRESS_DENY)
    ingress[0] = tag
    egress[:] = np.where(allowed, vids, EGRESS_NOT_MEMBER)
    if mode == "native-untagged":
        egress[tag] = 0
