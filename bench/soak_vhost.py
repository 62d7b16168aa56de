"""``python -m bench soak-vhost``: the vhost-user fuzz of tests/test_vhost_fuzz.py, run long against the real daemon.

A ``pyvswitch run`` in a private rundir gets one bridge: two veth hosts pinging each other (the
canary, VLAN 100) and vhost-user ports on VLAN 200: ``vz`` for the fuzzed guests, ``va`` and
``vb`` for two well-behaved guests. Until the targets (or the time limit) are reached it runs:

* ring cases: a fuzzed guest (random features and queue size, memory with canary zones) offers
  fuzzed TX rings, then fuzzed RX rings that ``va`` fills, until the switch resets it. A model of
  the virtio rules predicts every chain: the frames ``va``/``vb`` receive, every byte of guest
  memory the switch may write, or the named counter of the reset; all of it is checked;
* protocol sessions (as many as the targets' ratio asks for): random vhost-user messages, sizes
  and fds; every message must be answered or the connection closed with a reason;
* now and then a guest on its own port ``vx`` (VLAN 300) that makes its call eventfd blocking
  and full: the switch must reset it without waiting (that port then backs off, up to 60 s);
* every ``--check-every`` ring cases, a well-behaved guest on ``vz`` exchanging frames with ``va``.

Reported (stdout and bench/results/soak-vhost.{json,md}): sessions and chains tried, resets by
counter name (the daemon's Interface.statistics, and what the model predicted for the ring
cases), crashes (the daemon's pid must stay the same), the daemon's fds before and after,
canary loss, duration, and each problem with the seed that replays it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import Progress, add_output_args, log, machine_info, signals_raise, write_results

MAX_PROBLEMS = 50          # problems kept in the results (all are counted)


def _start_switch(rundir: str, logfile: Path) -> Any:
    """``pyvswitch run`` with its log in a file (a pipe nobody reads would fill and stop the daemon)."""
    from tests.switchutil import Switch

    class SoakSwitch(Switch):
        def start(self) -> None:
            self._log = open(logfile, "a")  # noqa: SIM115 - closed in stop()
            self.proc = subprocess.Popen([sys.executable, "-m", "vswitch.cli", "run", "--rundir", self.rundir],
                                         stdout=subprocess.PIPE, stderr=self._log, text=True, env=self.env)
            line = self.proc.stdout.readline()
            if "running" not in line:
                raise RuntimeError(f"pyvswitch run did not start: {line!r} (log: {logfile})")

        def stop(self) -> tuple[int, str]:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            code, self.proc = self.proc.returncode, None
            self._log.close()
            return code, ""

    sw = SoakSwitch(rundir)
    sw.start()
    return sw


class _Canary:
    """A ping every ``interval`` s from namespace ``ns`` to ``ip`` for the whole soak (its output goes to a file:
    a pipe read only at the end fills after ~800 replies and stops ping)."""

    def __init__(self, ns: str, ip: str, interval: float) -> None:
        self._out = tempfile.TemporaryFile(mode="w+")
        self.result = (0, 0, float("inf"))
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-D", "-n", "-i", str(interval), "-W", "1",
                                      ip], stdout=self._out, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> tuple[int, int, float]:
        """Stop pinging: (requests sent, replies received, longest time between two replies in seconds)."""
        if self._out.closed:
            return self.result
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.seek(0)
        out = self._out.read()
        self._out.close()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        stamps = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
        gap = max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=float("inf"))
        self.result = (int(m.group(1)), int(m.group(2)), gap) if m else (0, 0, float("inf"))
        return self.result


class _Attacks:
    """Guests that make their call eventfd blocking, one after another on ``vx``, in the background."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tried = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fd-attacks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from tests.test_vhost_fuzz import fd_attack

        while not self._stop.is_set():
            try:
                problem = fd_attack(self.path, timeout=90)
            except Exception as e:  # noqa: BLE001 - reported, the soak goes on
                problem = f"{type(e).__name__}: {e}"
            self.tried += 1
            if problem:
                self.problems.append(f"fd attack {self.tried}: {problem}")
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)         # an attack may still wait out the port's back-off: it is a daemon thread


def main(argv: list[str] | None = None) -> int:
    """Run the soak (``python -m bench soak-vhost --help``)."""
    ap = argparse.ArgumentParser(prog="python -m bench soak-vhost", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chains", type=int, default=1_000_000,
                    help="descriptor chains the switch must look at (default 1,000,000)")
    ap.add_argument("--sessions", type=int, default=20_000, help="hostile protocol sessions (default 20,000)")
    ap.add_argument("--time-limit", type=float, default=1800.0,
                    help="stop after this many seconds even if a target is not reached; 0: no limit (default 1800)")
    ap.add_argument("--seed", type=int, default=1, help="seed of every random choice (default 1)")
    ap.add_argument("--hostile", type=int, default=25, help="%% of fuzzed rings with hostile changes (default 25)")
    ap.add_argument("--rounds", type=int, default=8, help="fuzzed rings per guest and direction, at most (default 8)")
    ap.add_argument("--max-chains", type=int, default=128, help="chains per fuzzed ring, at most (default 128)")
    ap.add_argument("--check-every", type=int, default=500,
                    help="ring cases between two well-behaved guests on the fuzzed port (default 500)")
    ap.add_argument("--no-fd-attacks", action="store_true", help="no guests that make their eventfds blocking")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, veth)", file=sys.stderr)
        return 2

    from tests.netutil import unique
    from tests.test_vhost_fuzz import (
        FAULT_NAME,
        DaemonLab,
        FdKit,
        RandomChooser,
        fd_count,
        gen_session,
        guest_resets,
        run_session,
    )
    from vswitch.hostnet import HostNet

    out: dict[str, Any] = {"sessions_tried": 0, "sessions_reset": 0, "requests_refused": 0, "ring_guests": 0,
                           "chains_tried": 0, "frames_forwarded": 0, "frames_into_guests": 0, "crashes": 0}
    outcomes: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    problems: list[str] = []
    n_problems = 0
    interrupted = ""
    t0 = time.monotonic()
    logfile = Path(tempfile.gettempdir()) / f"soak-vhost-{os.getpid()}.log"

    def problem(text: str) -> None:
        nonlocal n_problems
        n_problems += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)
        log(f"PROBLEM: {text}")

    with signals_raise(), contextlib.ExitStack() as stack:
        rundir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pvsoak-"))
        net = stack.enter_context(HostNet())
        sw = _start_switch(rundir, logfile)
        stack.callback(lambda: sw.proc is not None and sw.stop())
        lab = DaemonLab(sw, net, unique("sk"), subnet="10.79.0")
        stack.callback(lab.close)
        out["daemon_pid"] = lab.pid
        out["daemon_fds_before"] = lab.fds
        base = guest_resets(lab.statistics())
        base_vx = guest_resets(lab.statistics("vx"))
        attacks = None if args.no_fd_attacks else _Attacks(lab.attack_path)
        canary = _Canary(lab.ns1, lab.peer, interval=0.2)
        stack.callback(canary.stop)
        deadline = t0 + args.time_limit if args.time_limit > 0 else float("inf")
        log(f"soak-vhost: {args.chains:,} chains, {args.sessions:,} sessions, time limit "
            f"{args.time_limit or 'none'} s; daemon pid {lab.pid}, {lab.fds} fds; log {logfile}")
        bar = Progress(args.chains, "chains")
        case = 0
        try:
            while time.monotonic() < deadline and (out["chains_tried"] < args.chains
                                                   or out["sessions_tried"] < args.sessions):
                dead = lab.alive() if case % 200 == 0 else ""
                if dead:
                    out["crashes"] += 1
                    problem(dead)
                    break
                if out["chains_tried"] < args.chains:
                    seed = args.seed * 1_000_003 + case
                    try:
                        res = lab.fuzzer.run(RandomChooser(seed), rounds=args.rounds, max_chains=args.max_chains,
                                             max_descs=4, max_frames=8, hostile=args.hostile)
                    except (AssertionError, OSError, RuntimeError) as e:
                        problem(f"ring case seed {seed}: {type(e).__name__}: {e}")
                        res = None
                    if res is not None:
                        out["ring_guests"] += 1
                        out["chains_tried"] += res.chains
                        out["frames_forwarded"] += res.outcomes.get("tx_frames", 0)
                        out["frames_into_guests"] += res.outcomes.get("rx_delivered", 0)
                        outcomes.update(res.outcomes)
                        if res.fault:
                            predicted[FAULT_NAME[res.fault]] += 1
                            predicted["port_resets"] += 1
                        for p in res.problems:
                            problem(f"ring case seed {seed}: {p}")
                    bar.set(out["chains_tried"], f"chains, {out['sessions_tried']:,} sessions, "
                                                 f"{n_problems} problems")
                    case += 1
                    if case % args.check_every == 0:
                        try:
                            lab.good_session()
                        except (AssertionError, OSError, RuntimeError) as e:
                            problem(f"a well-behaved guest on the fuzzed port failed after case {case}: {e}")
                due = args.sessions if out["chains_tried"] >= args.chains else \
                    args.sessions * out["chains_tried"] // max(args.chains, 1)
                while out["sessions_tried"] < min(due, args.sessions) and time.monotonic() < deadline:
                    seed = args.seed * 7_000_003 + out["sessions_tried"]
                    try:
                        with FdKit() as kit:
                            r = run_session(lab.path, gen_session(RandomChooser(seed)), kit)
                        out["sessions_reset"] += r.reset
                        out["requests_refused"] += r.refused
                    except (AssertionError, OSError, RuntimeError) as e:
                        problem(f"session seed {seed}: {type(e).__name__}: {e}")
                    out["sessions_tried"] += 1
        except (KeyboardInterrupt, Exception) as e:  # noqa: BLE001 - the results so far are still written
            interrupted = f"{type(e).__name__}: {e}"
            log(f"soak-vhost stopped: {interrupted}\n{traceback.format_exc()}")
        bar.close()
        if attacks is not None:
            attacks.stop()
            out["fd_attacks"] = attacks.tried
            for p in attacks.problems:
                problem(p)
        sent, received, gap = canary.stop()
        out["canary_sent"], out["canary_received"] = sent, received
        out["canary_loss_pct"] = round(100.0 * (sent - received) / max(sent, 1), 3)
        out["canary_longest_gap_s"] = round(gap, 2)
        dead = lab.alive()
        if dead:
            out["crashes"] += 1
            problem(dead)
        else:
            with contextlib.suppress(AssertionError, OSError):
                lab.good_session()
            fds = lab.settle(30)
            t = time.monotonic()
            while fds > lab.fds and time.monotonic() - t < 15:
                time.sleep(0.5)
                fds = fd_count(lab.pid)
            out["daemon_fds_after"] = fds
            time.sleep(6)          # one statistics interval
            now = guest_resets(lab.statistics())
            out["resets_by_counter"] = {k: v - base.get(k, 0) for k, v in sorted(now.items()) if v - base.get(k, 0)}
            vx = guest_resets(lab.statistics("vx"))
            out["fd_attack_resets"] = vx.get("port_resets", 0) - base_vx.get("port_resets", 0)
        out["duration_s"] = round(time.monotonic() - t0, 1)

    out["problems"] = n_problems
    reached = out["chains_tried"] >= args.chains and out["sessions_tried"] >= args.sessions
    command = " ".join(["python -m bench soak-vhost", *(argv if argv is not None else sys.argv[1:])])
    method = (f"`{command}`: a pyvswitch "
              f"daemon, one bridge: two veth hosts pinging each other every 0.2 s (VLAN 100), fuzzed vhost-user guests "
              f"on one port and two well-behaved guests (VLAN 200). Ring cases: a fresh guest (random features and "
              f"queue size) offers up to {args.rounds} fuzzed TX rings then RX rings of up to {args.max_chains} chains "
              f"({args.hostile}% of rings with hostile changes); a model of the virtio rules predicts each chain and "
              f"the frames, guest memory, canary zones and resets are checked. Protocol sessions: random messages, "
              f"sizes and fds. Seed {args.seed}. " + ("" if reached else "The time limit came first."))
    payload = {"method": method, "machine": machine_info(), "results": [out],
               "resets_predicted_by_the_model": dict(sorted(predicted.items())),
               "chain_outcomes": dict(sorted(outcomes.items())), "problem_list": problems,
               "targets": {"chains": args.chains, "sessions": args.sessions, "time_limit_s": args.time_limit,
                           "reached": reached},
               "stopped_by": interrupted, "daemon_log": str(logfile)}
    write_results("soak-vhost", payload, None, print_json=args.json,
                  out_dir=Path(args.out_dir) if args.out_dir else None)
    print(f"sessions tried {out['sessions_tried']:,} (reset {out['sessions_reset']:,}), chains tried "
          f"{out['chains_tried']:,} in {out['ring_guests']:,} guests, resets {out.get('resets_by_counter', {})}, "
          f"crashes {out['crashes']}, daemon fds {out['daemon_fds_before']} -> {out.get('daemon_fds_after')}, "
          f"canary {out['canary_received']}/{out['canary_sent']} answered ({out['canary_loss_pct']}% lost, longest "
          f"gap {out['canary_longest_gap_s']} s), fd attacks {out.get('fd_attacks', 0)} "
          f"(reset {out.get('fd_attack_resets', 0)}), {out['duration_s']} s, problems {n_problems}")
    return 0 if not n_problems and not out["crashes"] and not interrupted else 1


if __name__ == "__main__":
    sys.exit(main())
