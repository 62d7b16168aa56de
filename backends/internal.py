"""Internal ports: the bridge's own host interface, a tap named after the port."""

from __future__ import annotations

from backends.tap import TapPort


class InternalPort(TapPort):
    """The host side of a bridge (OVSDB ``Interface.type = "internal"``): a tap named ``name``.

    Same constructor and behaviour as ``TapPort``; frames the host sends through the
    interface are received by the switch and vice versa.
    """

    type = "internal"
