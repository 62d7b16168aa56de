"""The executor's ``CLONE``: nested actions on a copy of the frame, the frame as it was afterwards (what a tunnel
output runs: ``clone(tnl_push(...), <underlay actions>)``)."""

from __future__ import annotations

import pytest

from dpif import actions as A
from tests.test_dp_actions import run_kernel

FRAME = bytes.fromhex("020000000002" "020000000001" "0800") + bytes(range(46))
MAC9 = 0x020000000009


def _prog(*acts: list[int]) -> list[int]:
    return [int(w) for w in A.encode(list(acts))]


def test_clone_edits_a_copy_and_the_frame_goes_on_unchanged() -> None:
    prog = _prog(A.clone(A.set_field("eth_dst", MAC9), A.output(1)), A.output(2))
    queues, drops, fresh = run_kernel([(64, FRAME, prog)], free=4)
    assert queues[1] == [(64, bytes.fromhex("020000000009") + FRAME[6:])]     # the clone's edit
    assert queues[2] == [(64, FRAME)]                                           # the frame as it was
    assert fresh == 1 and sum(drops) == 0


def test_a_drop_inside_a_clone_ends_only_the_clone() -> None:
    prog = _prog(A.clone(A.drop(A.DROP_REASONS.index("explicit_drop")), A.output(1)), A.output(2))
    queues, drops, fresh = run_kernel([(64, FRAME, prog)], free=4)
    assert 1 not in queues and queues[2] == [(64, FRAME)]
    assert drops[A.DR_EXPLICIT] == 1 and drops[A.DROP_REASONS.index("no_output")] == 0
    # the positive twin: without the drop, the clone outputs
    queues, drops, _ = run_kernel([(64, FRAME, _prog(A.clone(A.output(1)), A.output(2)))], free=4)
    assert queues[1] == [(64, FRAME)] and queues[2] == [(64, FRAME)]


def test_a_clone_at_the_end_edits_the_frame_itself() -> None:
    prog = _prog(A.output(2), A.clone(A.set_field("eth_dst", MAC9), A.output(1)))
    queues, _drops, fresh = run_kernel([(64, FRAME, prog)], free=4)
    assert queues[2] == [(64, FRAME)] and queues[1][0][1][:6] == bytes.fromhex("020000000009")
    assert fresh == 1       # copied because the frame was queued before, not because of the clone
    queues, _drops, fresh = run_kernel([(64, FRAME, _prog(A.clone(A.set_field("eth_dst", MAC9), A.output(1))))],
                                       free=4)
    assert fresh == 0 and queues[1][0][1][:6] == bytes.fromhex("020000000009")


def test_edits_after_a_clone_do_not_touch_what_the_clone_queued() -> None:
    prog = _prog(A.clone(A.output(1)), A.set_field("eth_dst", MAC9), A.output(2))
    queues, _drops, fresh = run_kernel([(64, FRAME, prog)], free=4)
    assert queues[1] == [(64, FRAME)]
    assert queues[2][0][1][:6] == bytes.fromhex("020000000009") and fresh == 1


def test_nested_clones_are_refused() -> None:
    inner = A.clone(A.output(1))
    bad = [A.OP_CLONE, len(inner) + 2, *inner, A.OP_OUTPUT, 1]
    with pytest.raises(ValueError):
        A.decode(bad + [A.OP_OUTPUT, 1, 2])
    queues, drops, _ = run_kernel([(64, FRAME, bad + [A.OP_OUTPUT, 1, 2])], free=4)
    assert drops[A.DR_BAD_PROGRAM] == 1 and 2 not in queues
