"""Micro-benchmark of the virtqueue kernels (backends/virtq.py): ns per frame for vq_dequeue and vq_enqueue.

A synthetic guest: one memfd region mapped through ``GuestMemory``, two rings of ``--ring``
entries, one descriptor per frame (64-byte frames behind a 12-byte header, as DPDK's virtio PMD
lays them out), MRG_RXBUF and EVENT_IDX negotiated, no notifications. Each round publishes a
burst on both rings, dequeues it from the TX ring into pool slots and enqueues the slots into the
RX ring. Everything is in cache (one core plays both sides): this is the kernels' own cost; the
cross-core cost shows in ``python -m bench vhost``. The anchor is the same dequeue written in plain
Python over the same numpy views. Results: ``bench/results/virtq.{json,png,md}``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from backends import virtq as V
from backends.guestmem import GuestMemory, Region
from backends.pool import PacketPool
from bench.common import PlotSpec, add_output_args, log, machine_info, write_results

MEM = 16 << 20
HDR = 12


class Rig:
    """Guest memory, both rings filled with one-descriptor buffers, a pool and the kernels' arrays."""

    def __init__(self, ring: int, frame: int) -> None:
        fd = os.memfd_create("pvb-virtq")
        os.ftruncate(fd, MEM)
        self.mem = GuestMemory([Region(0, MEM, 0x7F0000000000, 0)], [fd])
        os.close(fd)
        self.ring, self.frame = ring, frame
        self.st = np.zeros(V.STATE_WORDS, np.int64)
        self.vq = np.zeros((2, V.VQ_WORDS), np.int64)
        st, vq, m = self.st, self.vq, self.mem
        st[V.S_HDR_LEN], st[V.S_MRG_RXBUF], st[V.S_EVENT_IDX], st[V.S_NREGIONS], st[V.S_BUSY] = HDR, 1, 1, 1, 32
        vq[:, V.Q_CALL_FD] = -1
        vq[:, V.Q_KICK_FD] = -1
        for q in (0, 1):
            base = q * (1 << 20)
            vq[q, V.Q_SIZE], vq[q, V.Q_DESC] = ring, base
            vq[q, V.Q_AVAIL], vq[q, V.Q_USED], vq[q, V.Q_READY] = base + 16 * ring, base + 16 * ring + 8192, 1
            for i in range(ring):
                d = base + 16 * i
                m.m64[d >> 3] = (2 << 20) + q * (4 << 20) + i * 2048
                m.m32[(d + 8) >> 2] = HDR + frame if q == V.TX_QUEUE else 2048
                m.m16[(d + 12) >> 1] = 0 if q == V.TX_QUEUE else V.VRING_DESC_F_WRITE
                m.m16[(vq[q, V.Q_AVAIL] + 4 + 2 * i) >> 1] = i
        self.pool = PacketPool(8192, 2048)
        self.work = np.zeros((V.WORK_ROWS, 1024), np.int64)
        self.burst = np.zeros(1024, np.int32)
        self.vlans = np.full(1024, -1, np.int32)

    def publish(self, n: int) -> None:
        """The guest posts ``n`` more entries on both rings."""
        for q in (0, 1):
            a = self.vq[q, V.Q_AVAIL]
            self.mem.m16[(a + 2) >> 1] = (int(self.mem.m16[(a + 2) >> 1]) + n) & 0xFFFF

    def round(self, n: int) -> tuple[int, int, int]:
        """One burst each way; returns (frames, dequeue ns, enqueue ns)."""
        st, m, pool = self.st, self.mem, self.pool
        self.publish(n)
        st[V.S_RX_START], st[V.S_RX_MAX] = 0, n
        t0 = time.perf_counter_ns()
        got = V.vq_dequeue(st, self.vq, m.table, m.mem, m.m16, m.m32, m.m64, self.work, pool.data, pool.meta,
                           pool.free_stack, pool.free_top, self.burst)
        t1 = time.perf_counter_ns()
        st[V.S_TX_START], st[V.S_TX_COUNT] = 0, got
        V.vq_enqueue(st, self.vq, m.table, m.mem, m.m16, m.m32, m.m64, self.work, pool.data, pool.meta,
                     self.burst, self.vlans)
        t2 = time.perf_counter_ns()
        pool.free(self.burst, got)
        return got, t1 - t0, t2 - t1

    def python_dequeue(self, n: int) -> int:
        """The anchor: the same one-descriptor dequeue in plain Python over the numpy views."""
        m, vq, q = self.mem, self.vq, V.TX_QUEUE
        self.publish(n)
        size, desc, avail, used = (int(vq[q, k]) for k in (V.Q_SIZE, V.Q_DESC, V.Q_AVAIL, V.Q_USED))
        last, used_idx = int(vq[q, V.Q_LAST_AVAIL]), int(vq[q, V.Q_USED_IDX])
        avail_idx = int(m.m16[(avail + 2) >> 1])
        got = 0
        while last != avail_idx and got < n:
            head = int(m.m16[(avail + 4 + 2 * (last % size)) >> 1])
            d = desc + 16 * head
            addr, length = int(m.m64[d >> 3]), int(m.m32[(d + 8) >> 2])
            slot = int(self.pool.free_stack[self.pool.free_top[0] - 1])
            self.pool.free_top[0] -= 1
            self.pool.data[slot, :length - HDR] = m.mem[addr + HDR:addr + length]
            self.pool.meta[slot, 0] = length - HDR
            self.burst[got] = slot
            u = used + 4 + 8 * (used_idx % size)
            m.m32[u >> 2], m.m32[(u + 4) >> 2] = head, 0
            used_idx, last, got = (used_idx + 1) & 0xFFFF, (last + 1) & 0xFFFF, got + 1
        m.m16[(used + 2) >> 1] = used_idx
        vq[q, V.Q_LAST_AVAIL], vq[q, V.Q_USED_IDX] = last, used_idx
        self.pool.free(self.burst, got)
        # keep the RX ring in step (nothing to receive in this anchor)
        vq[V.RX_QUEUE, V.Q_LAST_AVAIL] = (int(vq[V.RX_QUEUE, V.Q_LAST_AVAIL]) + got) & 0xFFFF
        return got


def main(argv: list[str] | None = None) -> int:
    """Run the micro-benchmark (``python -m bench virtq --help``)."""
    ap = argparse.ArgumentParser(prog="python -m bench virtq", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bursts", default="32,256", help="comma-separated burst sizes")
    ap.add_argument("--ring", type=int, default=1024, help="ring size (entries)")
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per burst size")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    rows = []
    for burst in (int(b) for b in args.bursts.split(",")):
        rig = Rig(args.ring, 64)
        for _ in range(50):
            rig.round(burst)
        best_dq = best_eq = float("inf")
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:    # best of 0.05 s windows: this VM's neighbours steal CPU in bursts
            frames = dq = eq = 0
            w_end = time.monotonic() + 0.05
            while time.monotonic() < w_end:
                n, a, b = rig.round(burst)
                frames, dq, eq = frames + n, dq + a, eq + b
            best_dq, best_eq = min(best_dq, dq / frames), min(best_eq, eq / frames)
        t0, frames = time.perf_counter_ns(), 0
        while time.perf_counter_ns() - t0 < 0.3e9:
            frames += rig.python_dequeue(burst)
        py_dq = (time.perf_counter_ns() - t0) / frames
        rig.mem.close()
        rows.append({"burst": burst, "dequeue_ns_per_frame": round(best_dq, 1),
                     "enqueue_ns_per_frame": round(best_eq, 1), "python_dequeue_ns_per_frame": round(py_dq),
                     "dequeue_speedup_vs_python": round(py_dq / best_dq)})
        log(f"burst {burst}: dequeue {best_dq:.1f} ns/frame, enqueue {best_eq:.1f} ns/frame, "
            f"python dequeue {py_dq:.0f} ns/frame")
    method = (f"Synthetic guest in one memfd region ({MEM >> 20} MiB) mapped by GuestMemory; rings of {args.ring} "
              f"one-descriptor buffers, 64-byte frames behind a {HDR}-byte header, MRG_RXBUF + EVENT_IDX, no "
              f"notifications; one core plays guest and switch, so everything is in cache. Per burst size: best "
              f"of 0.05 s windows over {args.seconds} s (time inside each kernel call, Python call overhead "
              f"included); anchor: the same dequeue in plain Python over the same numpy views, 0.3 s.")
    write_results("virtq", {"method": method, "machine": machine_info(), "results": rows},
                  PlotSpec(group="burst", series="", metrics=[("dequeue_ns_per_frame", "dequeue ns/frame"),
                                                              ("enqueue_ns_per_frame", "enqueue ns/frame")],
                           title="virtqueue kernels, in cache"),
                  print_json=args.json, out_dir=Path(args.out_dir) if args.out_dir else None)
    return 0
