"""What ``ofproto/trace`` learns from a translation: the ``Recorder`` the walk (``xlate.translate``) tells every
step, ``BaseRecorder`` (a Recorder of indented lines, the structure calls ignored) and the action formatter trace
lines use (``vswitch.openflow.tracetext.action_text`` once the OpenFlow side is loaded)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ofproto.actions import format_nicira
from ofproto.rules import Action, Flow

_fmt_hook: Callable[[Action], str] | None = None


def set_action_formatter(fn: Callable[[Action], str]) -> None:
    """The function trace lines format actions with (``vswitch.openflow.tracetext.action_text``)."""
    global _fmt_hook
    _fmt_hook = fn


def fmt_action(a: Action) -> str:
    """An action as trace lines write it."""
    if _fmt_hook is not None:
        return _fmt_hook(a)
    return format_nicira(a) or repr(a)


class Recorder(Protocol):
    """What ``ofproto/trace`` learns from a translation."""

    def table(self, table_id: int, flow: Flow | None) -> None:
        """A lookup in ``table_id`` found ``flow`` (None: no match)."""

    def note(self, text: str) -> None:
        """Something the walk did that deserves a line (an action, a skipped output, ...)."""

    def normal(self, key: list[int], in_port: int) -> None:
        """The NORMAL action runs on a frame with the headers ``key`` received on ``in_port``."""

    def bridge(self, bridge: int, in_port: int) -> None:
        """The walk continues in bridge ``bridge`` (after a patch port), from ``in_port``."""

    def resume(self, bridge: int) -> None:
        """The walk is back in bridge ``bridge`` (the one that output to the patch port)."""

    def action(self, a: Action, nest: int) -> None:
        """The walk runs action ``a``, ``nest`` resubmits (and group buckets) deep."""

    def enter(self) -> None:
        """A resubmit starts: the tables it looks up hang under it until ``leave``."""

    def leave(self) -> None:
        """The resubmit (or group bucket) ``enter`` / ``bucket`` started is over."""

    def bucket(self, bucket_id: int) -> None:
        """A group runs bucket ``bucket_id`` (its actions hang under it until ``leave``)."""

    def subfield(self, name: str, ofs: int, nbits: int, value: int) -> None:
        """An action (move, pop) left bits ``ofs .. ofs + nbits - 1`` of field ``name`` holding ``value``."""

    def mark(self) -> object:
        """Where the actions of the list starting now are recorded (for ``more``)."""

    def more(self, mark: object) -> None:
        """The list recorded at ``mark`` has actions the walk did not run (it ended at ``ct``, where OVS's walk
        forks and goes on)."""


class BaseRecorder:
    """A Recorder keeping lines (``note``): actions as indented lines, the structure calls ignored."""

    def table(self, table_id: int, flow: Flow | None) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def normal(self, key: list[int], in_port: int) -> None:
        pass

    def bridge(self, bridge: int, in_port: int) -> None:
        pass

    def resume(self, bridge: int) -> None:
        pass

    def action(self, a: Action, nest: int) -> None:
        self.note(f"    {'    ' * nest}{fmt_action(a)}")

    def enter(self) -> None:
        pass

    def leave(self) -> None:
        pass

    def bucket(self, bucket_id: int) -> None:
        pass

    def subfield(self, name: str, ofs: int, nbits: int, value: int) -> None:
        pass

    def mark(self) -> object:
        return None

    def more(self, mark: object) -> None:
        pass
