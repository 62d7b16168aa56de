"""The ``pyvswitch`` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from vswitch.vlan import VlanConfig, VlanConfigError

PORT_SPEC_HELP = """\
A port is TYPE:NAME[,tag=N][,trunks=A,B,...][,vlan_mode=MODE]:
  TYPE       system (an existing netdev: veth, NIC), tap (created), internal (created)
  tag        access VLAN (0-4095); with no vlan_mode the port is an access port
  trunks     VLANs a trunk port carries (default: all)
  vlan_mode  access | trunk | native-tagged | native-untagged (OVS's meanings)
Examples: system:veth1   tap:vm1tap,tag=10   system:uplink,trunks=10,20,vlan_mode=trunk
"""


def parse_port_spec(spec: str) -> tuple[str, str, VlanConfig]:
    """``TYPE:NAME[,key=value...]`` as (type, name, VLAN settings); ValueError with a reason."""
    head, _, rest = spec.partition(",")
    if ":" not in head:
        raise ValueError(f"port {spec!r}: expected TYPE:NAME, e.g. system:veth1")
    ptype, name = head.split(":", 1)
    if ptype not in ("system", "tap", "internal"):
        raise ValueError(f"port {spec!r}: type {ptype!r} is not one of system, tap, internal")
    if not name or len(name) > 15:
        raise ValueError(f"port {spec!r}: interface names are 1 to 15 characters")
    opts: dict[str, str] = {}
    last = None
    for token in filter(None, rest.split(",")):
        if "=" in token:
            last, value = token.split("=", 1)
            if last not in ("tag", "trunks", "vlan_mode"):
                raise ValueError(f"port {spec!r}: unknown setting {last!r} (tag, trunks, vlan_mode)")
            opts[last] = value
        elif last == "trunks":
            opts["trunks"] += "," + token
        else:
            raise ValueError(f"port {spec!r}: {token!r} is not key=value")
    try:
        vlan = VlanConfig(
            tag=int(opts["tag"]) if "tag" in opts else None,
            trunks=tuple(int(v) for v in opts["trunks"].split(",")) if "trunks" in opts else (),
            vlan_mode=opts.get("vlan_mode"),
        )
    except VlanConfigError as exc:
        raise ValueError(f"port {spec!r}: {exc}") from None
    except ValueError:
        raise ValueError(f"port {spec!r}: tag and trunks take VLAN numbers") from None
    return ptype, name, vlan


def cmd_bridge(args: argparse.Namespace) -> int:
    """Run one bridge in the foreground until SIGINT/SIGTERM."""
    from vswitch.bridge import Bridge, BridgeError

    try:
        specs = [parse_port_spec(s) for s in args.port]
    except ValueError as exc:
        print(f"pyvswitch bridge: {exc}", file=sys.stderr)
        return 2
    bridge = Bridge(args.name, mac_table_size=args.mac_table_size, mac_aging_time=args.mac_aging_time)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for ptype, name, vlan in specs:
            try:
                bridge.add_port(name, ptype, vlan)
            except (BridgeError, OSError) as exc:
                print(f"pyvswitch bridge: port {name}: {exc}", file=sys.stderr)
                return 1
        for spec in args.static_mac:
            parts = spec.split(",")
            try:
                if len(parts) not in (2, 3):
                    raise BridgeError("expected PORT,MAC[,VLAN]")
                bridge.add_static_mac(parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 0)
            except (BridgeError, ValueError) as exc:
                print(f"pyvswitch bridge: --static-mac {spec}: {exc}", file=sys.stderr)
                return 2
        ports = ", ".join(f"{bp.name} (ofport {bp.ofport}, {bp.vlan.describe()})" for bp in bridge.ports.values())
        print(f"pyvswitch: bridge {args.name} ready: {ports}", flush=True)
        next_stats = time.monotonic() + args.stats_interval if args.stats_interval else None
        while not stop.wait(0.2):
            if next_stats and time.monotonic() >= next_stats:
                next_stats += args.stats_interval
                print(bridge.stats_table(), flush=True)
        print(bridge.stats_table(), end="", flush=True)
        drops = {k: v for k, v in bridge.drop_stats().items() if v}
        print("drops: " + (", ".join(f"{k}={v}" for k, v in drops.items()) or "none"), flush=True)
        return 0
    finally:
        bridge.close()


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo (see ``vswitch.demo``)."""
    from vswitch.demo import run_demo

    return run_demo(verbose=args.verbose)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the OVSDB-driven daemon (see ``vswitch.daemon``), in the foreground or detached."""
    import os

    from vswitch.daemon import run_daemon

    rundir = os.path.abspath(args.rundir or os.environ.get("OVS_RUNDIR") or "/var/run/openvswitch")
    if args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    if args.detach and not args.log_file:
        args.log_file = os.path.join(rundir, "ovs-vswitchd.log")  # a detached daemon must log somewhere
    if args.log_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.log_file)), exist_ok=True)
        handler = logging.FileHandler(args.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
    if not args.detach:
        return run_daemon(rundir, args.db, args.pidfile)
    # --detach: the child runs the daemon; the parent returns once it reports start-up (or failure).
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        with os.fdopen(read_fd) as status:
            line = status.readline()
        print(line.strip() or "pyvswitch run: the daemon exited during start-up", flush=True)
        return 0 if "running" in line else 1
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 2):
        os.dup2(devnull, fd)
    os.dup2(write_fd, 1)  # the start-up line goes to the parent; then stdout is closed
    code = run_daemon(rundir, args.db, args.pidfile, on_started=lambda: os.dup2(devnull, 1))
    os._exit(code)


def cmd_vm_check(args: argparse.Namespace) -> int:
    """``vm check``: print what the host offers and which accelerator ``vm start`` will use."""
    from vswitch.kvm import check_host

    hc = check_host(args.accel)
    print(hc.report(), end="")
    return 0 if hc.qemu and hc.memfd else 1


def cmd_vm_image_build(args: argparse.Namespace) -> int:
    """``vm image build``: the test guest's kernel and initramfs into ``--out``."""
    from vswitch.vmimage import VmImageError, build_image, kernel_cmdline

    try:
        image = build_image(args.out)
    except VmImageError as e:
        print(f"pyvswitch vm image build: {e}", file=sys.stderr)
        return 1
    print(f"kernel {image.kernel}\ninitrd {image.initrd}\nrelease {image.version}\n"
          f"cmdline {kernel_cmdline('10.0.0.11/24')}  (vm start --ip sets ip=)")
    return 0


VM_HELP = """\
Guests wired to the switch, without libvirt:
  pyvswitch vm check                  can this host run guests; KVM or TCG, and why
  pyvswitch vm image build --out DIR  a small test guest: Debian's cloud kernel + a busybox initramfs
"""


def _command_group(sub: argparse._SubParsersAction, name: str, **kwargs: object) -> argparse._SubParsersAction:
    """A subcommand that only groups others (``vm``, ``vm image``): alone, it prints its help and exits 2."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(func=lambda _args: (p.print_help(), 2)[1])
    return p.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pyvswitch",
        description="A software-defined virtual switch for Linux hosts, with numba fast paths.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the switch does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "bridge",
        help="run one bridge over the given ports in the foreground",
        description="Switch frames between ports (MAC learning, OVS VLAN modes) until Ctrl-C or SIGTERM. "
        "Prints a line with 'ready' once forwarding, and the port counters at exit.",
        epilog=PORT_SPEC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="bridge name, e.g. br0")
    p.add_argument("--port", action="append", default=[], metavar="TYPE:NAME[,...]",
                   help="a port (repeat for more); see below")
    p.add_argument("--mac-table-size", type=int, default=8192, metavar="N",
                   help="maximum learned MACs (OVS mac-table-size, default 8192)")
    p.add_argument("--mac-aging-time", type=int, default=300, metavar="SECONDS",
                   help="seconds before an unused learned MAC is forgotten (default 300)")
    p.add_argument("--static-mac", action="append", default=[], metavar="PORT,MAC[,VLAN]",
                   help="pin MAC (in VLAN, default 0) to PORT: never aged, never moved (a VM's configured MAC)")
    p.add_argument("--stats-interval", type=float, default=0, metavar="SECONDS",
                   help="print the port counters every SECONDS (default: only at exit)")
    p.set_defaults(func=cmd_bridge)

    p = sub.add_parser(
        "run",
        help="replace ovs-vswitchd: bridges and ports from OVSDB, ovs-vsctl/ovs-appctl unchanged",
        description="Apply the Open vSwitch database (Bridge, Port, Interface) to pyvswitch bridges and write "
        "back what ovs-vswitchd writes (ofport, mac_in_use, error, statistics, cur_cfg). Without --db a private "
        "ovsdb-server is started at <rundir>/db.sock (database <rundir>/conf.db, kept across restarts). "
        "Use the stock tools with OVS_RUNDIR=<rundir>: ovs-vsctl add-br br0; ovs-appctl fdb/show br0.",
    )
    p.add_argument("--db", metavar="unix:PATH", help="use this ovsdb-server instead of a private one")
    p.add_argument("--rundir", metavar="DIR",
                   help="pidfile, control and database sockets (default $OVS_RUNDIR or /var/run/openvswitch)")
    p.add_argument("--pidfile", nargs="?", const="", default="", metavar="PATH",
                   help="pidfile (default and always: <rundir>/ovs-vswitchd.pid, which ovs-appctl reads)")
    p.add_argument("--detach", action="store_true", help="run in the background once started")
    p.add_argument("--log-file", metavar="PATH",
                   help="also log to PATH (SIGHUP reopens it; --detach defaults to <rundir>/ovs-vswitchd.log)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the switch does")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        help="two namespaces and a tap host pinging each other through a pyvswitch bridge",
        description="Creates namespaces pvdemo-a, pvdemo-b (veth to system ports) and pvdemo-c (on a tap "
        "port), pings between them through pyvswitch, prints the port counters and the learned MACs, and "
        "removes everything it created, also on Ctrl-C or failure. Needs root.",
    )
    p.set_defaults(func=cmd_demo)

    vm = _command_group(sub, "vm", help="QEMU guests whose NICs are switch ports", description=VM_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c = vm.add_parser(
        "check", help="is /dev/kvm usable (API 12, KVM_CREATE_VM, vmx/svm), hugepages, memfd, QEMU",
        description="Like kvm-ok: probes /dev/kvm (KVM_GET_API_VERSION must be 12, KVM_CREATE_VM must succeed), "
        "the CPU's vmx/svm flags, hugepages, memfd and the QEMU binary, and says which accelerator 'vm start' "
        "will use and why. A /dev/kvm on a CPU without vmx/svm (a paravirtual KVM) means TCG. Exit status 1 "
        "when guests cannot be started at all (no QEMU, no memfd).")
    c.add_argument("--accel", choices=("kvm", "tcg"), help="force the accelerator (the report says it was forced)")
    c.set_defaults(func=cmd_vm_check)
    imgsub = _command_group(vm, "image", help="the test guest image", description="Build the test guest image.")
    b = imgsub.add_parser(
        "build", help="kernel + busybox initramfs for test guests",
        description="Fetches Debian's linux-image-cloud-amd64 (apt-get download + dpkg-deb -x, nothing installed) "
        "and writes vmlinuz plus an initramfs (busybox-static, virtio-net modules) that configures eth0 from "
        "the kernel command line (ip=ADDR/LEN), answers ping, powers off on ACPI power-button and prints a "
        "ready line on the serial console. A rebuild is skipped while the inputs are unchanged.")
    b.add_argument("--out", required=True, metavar="DIR", help="directory for vmlinuz, initrd.img and manifest")
    b.set_defaults(func=cmd_vm_image_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyvswitch`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
