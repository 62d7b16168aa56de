"""The ``pyvswitch`` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import warnings

from vswitch.vlan import VlanConfig, VlanConfigError

# ovs.poller imports eventlet when it is installed (os-ken brings it), and eventlet's dnspython warns about DSA.
warnings.filterwarnings("ignore", message="DSA is deprecated")

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
    from backends.port import PortError
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
            except (BridgeError, PortError, OSError) as exc:
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
        return run_daemon(rundir, args.db, args.pidfile, sysfs=args.sysfs, netlink=args.netlink)
    # --detach: the child runs the daemon; the parent returns once it reports start-up (or failure).
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        with os.fdopen(read_fd) as status:
            line = status.readline()
        print(line.strip() or "pyvswitch run: the daemon exited during start-up", flush=True)
        return 0 if "running" in line or "waiting for the database" in line else 1
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 2):
        os.dup2(devnull, fd)
    os.dup2(write_fd, 1)  # the start-up line goes to the parent; then stdout is closed
    code = run_daemon(rundir, args.db, args.pidfile, on_started=lambda: os.dup2(devnull, 1), sysfs=args.sysfs,
                      netlink=args.netlink)
    os._exit(code)


def unixctl_call(path: str, method: str, params: list[str] | None = None, timeout: float = 5.0) -> tuple[bool, str]:
    """One ovs-appctl style command to the daemon at control socket ``path``: (succeeded, reply text).

    OSError (TimeoutError included) when the daemon cannot be reached or does not answer within ``timeout``."""
    import json
    import socket

    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"method": method, "params": params or [], "id": 0}).encode())
        buf = b""
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(f"{path} closed the connection without an answer")
            buf += chunk
            try:
                msg, _ = json.JSONDecoder().raw_decode(buf.decode(errors="replace"))
            except ValueError:
                continue   # a partial reply
            if msg.get("error") is not None:
                return False, str(msg["error"])
            return True, str(msg.get("result", ""))


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: is ``pyvswitch run`` running in the rundir, and in what state (database, ovsdb-server)."""
    import os

    from vswitch.ovsdb_server import OvsdbServer, is_running

    rundir = os.path.abspath(args.rundir or os.environ.get("OVS_RUNDIR") or "/var/run/openvswitch")
    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as f:
            pid: int | None = int(f.read().strip())
    except (OSError, ValueError):
        pid = None
    if pid is None or not is_running(pid):
        text = f"pyvswitch is not running in {rundir}" + (f" (stale pidfile: pid {pid} is gone)" if pid else "")
        orphan = OvsdbServer(rundir).owned_pid()
        if orphan is not None and is_running(orphan):
            text += (f"; its ovsdb-server (pid {orphan}) still runs, so ovs-vsctl works, and 'pyvswitch run' "
                     "replaces it")
        print(text)
        return 3
    ctl = os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")
    try:
        ok, text = unixctl_call(ctl, "pyvswitch/status", timeout=args.timeout)
    except OSError as exc:
        print(f"pyvswitch (pid {pid}) does not answer on {ctl}: {exc or 'timed out'}")
        return 1
    print(text, end="" if text.endswith("\n") else "\n")
    return 0 if ok and text.startswith("state: ok") else 1


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


def _vm_manager(args: argparse.Namespace):  # noqa: ANN202 - VmManager, imported lazily
    import os

    from vswitch.vm import VmManager

    rundir = args.rundir or os.environ.get("OVS_RUNDIR") or "/var/run/openvswitch"
    log = (lambda msg: print(f"pyvswitch vm: {msg}", file=sys.stderr)) if args.verbose else None
    return VmManager(rundir, db=args.db, log=log, sysfs=args.sysfs, netlink=args.netlink,
                     warn=lambda msg: print(f"pyvswitch vm {args.vm_command}: warning: {msg}", file=sys.stderr))


def _vm_error(command: str, exc: Exception) -> int:
    print(f"pyvswitch vm {command}: {exc}", file=sys.stderr)
    return 1


def cmd_vm_start(args: argparse.Namespace) -> int:
    """``vm start``: start a guest whose NICs are switch ports; wait until it boots."""
    import os
    from pathlib import Path

    from vswitch.vm import VmConfig, VmError, check_ip, parse_disk, parse_memory, parse_nic, print_status
    from vswitch.vmimage import default_cache_dir

    mgr = _vm_manager(args)
    try:
        fresh = args.nic or args.kernel or args.disk
        saved = None if fresh else mgr.saved_config(args.name)
        if saved is not None:
            options = (("--memory", args.memory), ("--cpus", args.cpus is not None), ("--ip", args.ip),
                       ("--initrd", args.initrd), ("--append", args.append), ("--hugepages", args.hugepages),
                       ("--qemu", args.qemu))
            given = [opt for opt, value in options if value]
            if given:
                raise VmError(f"{args.name} has a saved configuration, which 'vm start {args.name}' reuses as it is; "
                              f"{', '.join(given)} would be ignored. To change it, give the whole configuration "
                              "again (--nic ... and the rest)")
            cfg = saved
            print(f"pyvswitch vm start: starting {args.name} with its saved configuration", file=sys.stderr)
        else:
            cfg = VmConfig(args.name, memory_mb=parse_memory(args.memory or "256M"),
                           cpus=1 if args.cpus is None else args.cpus, append=args.append or "",
                           disks=[parse_disk(d) for d in args.disk],
                           nics=[parse_nic(n) for n in args.nic], hugepages=args.hugepages, qemu=args.qemu or "")
            if args.kernel:
                cfg.kernel = os.path.abspath(args.kernel)
                cfg.initrd = os.path.abspath(args.initrd) if args.initrd else ""
            elif not args.disk:
                image = default_cache_dir()
                if not (image / "vmlinuz").exists():
                    raise VmError(f"no --kernel or --disk given and no test image in {image}: "
                                  f"build one with pyvswitch vm image build --out {image}")
                cfg.kernel, cfg.initrd = str(image / "vmlinuz"), str(image / "initrd.img")
            if args.ip:
                if not cfg.nics:
                    raise VmError("--ip configures the first NIC: add a --nic")
                if cfg.nics[0].ip:
                    raise VmError(f"--ip {args.ip} and the first NIC's ip={cfg.nics[0].ip}: give one of them")
                cfg.nics[0].ip = check_ip(args.ip)
        if args.accel:
            cfg.accel = args.accel
        # The ready line is the test image's; other guests are waited for only with --ready.
        test_image = bool(cfg.kernel) and (Path(cfg.kernel).parent / "image.json").exists()
        wait_ready = not args.no_wait and bool(args.ready or test_image)
        if not args.no_wait and not wait_ready:
            print("pyvswitch vm start: not the test image, so not waiting for the guest to boot "
                  "(--ready TEXT waits for a console line)", file=sys.stderr)
        st = mgr.start(cfg, wait_ready=wait_ready, ready_text=args.ready or "pyvswitch-guest ready",
                       boot_timeout=args.boot_timeout)
    except VmError as exc:
        return _vm_error("start", exc)
    except KeyboardInterrupt:
        print(f"pyvswitch vm start: interrupted; VM {args.name} was stopped and its ports removed", file=sys.stderr)
        return 130
    print_status(st)
    return 0


def cmd_vm_stop(args: argparse.Namespace) -> int:
    """``vm stop``: ACPI power-off, QMP quit after the timeout; the VM's ports are removed."""
    from vswitch.vm import VmError

    try:
        how = _vm_manager(args).stop(args.name, timeout=args.timeout)
    except VmError as exc:
        return _vm_error("stop", exc)
    print(f"VM {args.name}: {how}")
    return 0


def cmd_vm_list(args: argparse.Namespace) -> int:
    """``vm list``: one line per VM."""
    from vswitch.vm import VmError

    mgr = _vm_manager(args)
    try:
        return _vm_list(mgr)
    except VmError as exc:
        return _vm_error("list", exc)


def _vm_list(mgr) -> int:  # noqa: ANN001 - VmManager, imported lazily
    from vswitch.vm import VmError

    names = mgr.names()
    if not names:
        print(f"no VMs in {mgr.vms_dir}")
        return 0
    width = max(16, *(len(n) for n in names))
    print(f"{'NAME':<{width}} {'STATE':<9} {'PID':>7} {'ACCEL':<5} {'MEMORY':>7} {'CPUS':>4}  NICS")
    for name in names:
        try:
            st = mgr.status(name, with_ports=False)
        except VmError as exc:
            print(f"{name:<{width}} damaged   ({exc})")
            continue
        nics = ", ".join(f"{n.kind}:{n.port}@{n.bridge}" if n.bridge else f"vf:{n.pf}/{n.vf}"
                         for n in st.config.nics) or "-"
        print(f"{name:<{width}} {st.state:<9} {st.pid or '-':>7} {st.accel or '-':<5} {st.config.memory_mb:>6}M "
              f"{st.config.cpus:>4}  {nics}")
    return 0


def cmd_vm_status(args: argparse.Namespace) -> int:
    """``vm status``: one VM in detail (or as JSON)."""
    import json

    from vswitch.vm import VmError, print_status

    try:
        st = _vm_manager(args).status(args.name)
    except VmError as exc:
        return _vm_error("status", exc)
    if args.json:
        print(json.dumps(st.to_json(), indent=1))
    else:
        print_status(st)
    return 0 if st.pid else 3


def cmd_vm_console(args: argparse.Namespace) -> int:
    """``vm console``: the serial console, interactive (Ctrl-] detaches) or from a pipe; ``--log`` prints it."""
    from vswitch.vm import VmError

    mgr = _vm_manager(args)
    try:
        if args.log:
            log = mgr.console_log(args.name)
            sys.stdout.write(log.read_text(errors="replace") if log.exists() else "")
            return 0
        return mgr.console(args.name, idle=args.idle)
    except VmError as exc:
        return _vm_error("console", exc)


def cmd_vm_delete(args: argparse.Namespace) -> int:
    """``vm delete``: forget a stopped VM (its directory, config and logs)."""
    from vswitch.vm import VmError

    try:
        _vm_manager(args).delete(args.name)
    except VmError as exc:
        return _vm_error("delete", exc)
    print(f"VM {args.name} deleted")
    return 0


VM_HELP = """\
Guests wired to the switch, without libvirt:
  pyvswitch vm check                  can this host run guests; KVM or TCG, and why
  pyvswitch vm image build --out DIR  a small test guest: Debian's cloud kernel + a busybox initramfs
  pyvswitch vm start NAME --nic vhost-user,bridge=br0 --ip 10.0.0.11/24
                                      start a guest; its NICs become ports of the bridges
  pyvswitch vm list | status NAME     what runs, its ports, MACs and addresses
  pyvswitch vm console NAME           the serial console (Ctrl-] detaches; --log prints the log)
  pyvswitch vm stop NAME              ACPI power-off (QMP quit after --timeout); ports removed
  pyvswitch vm delete NAME            forget a stopped VM (config and logs)
State lives in <rundir>/vms/NAME/ (rundir: --rundir, $OVS_RUNDIR or /var/run/openvswitch).
"""

NIC_HELP = """\
A NIC is KIND,key=value,...:
  vhost-user,bridge=BR[,mac=M][,ip=A/N][,tag=V][,port=P]
        a dpdkvhostuserclient port P on BR; QEMU is the socket server, so the switch can restart under the guest
  tap,bridge=BR[,mac=M][,ip=A/N][,tag=V][,port=P]
        a tap netdev P that QEMU opens, added to BR as a system port
  vf,pf=NETDEV,vf=N[,mac=M][,ip=A/N][,bridge=BR[,tag=V][,port=P]]
        SR-IOV VF N of PF NETDEV passed through to the guest: bound to vfio-pci at start and given back to its
        host driver at stop. The VF's MAC (and VLAN tag) are set through the PF. With bridge=, port P on BR is
        a sriov-vf port: the switch configures the VF and reaches the guest through BR's PF port (NETDEV must
        be a port of BR). The VF must be free: not on vfio-pci, its netdev down and not a switch port.
Defaults: port NAME-INDEX (vm<hash>-INDEX when that is longer than 15 characters), MAC 52:54:00:xx:xx:xx
stable per VM name and NIC index. ip= (and --ip for the
first NIC) is handed to the test image's init on the kernel command line (ip=, ip1=, ...).
The accelerator is what 'vm check' picks: KVM when /dev/kvm works and the CPU has vmx/svm, else TCG.
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
    p.add_argument("--sysfs", metavar="DIR", default="/sys",
                   help="where sysfs is, for SR-IOV PFs and VFs (default /sys; simulations give a tree of their own)")
    p.add_argument("--netlink", metavar="unix:PATH", default="",
                   help="configure VFs through a netlink stand-in at PATH instead of the kernel (simulations)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "status",
        help="is 'pyvswitch run' running, and its state: database, private ovsdb-server, bridges",
        description="Asks the daemon of the rundir (pyvswitch/status, also through ovs-appctl) and prints its "
        "state: the first line is 'state: ok' or 'state: degraded: WHY' (e.g. its ovsdb-server is down and being "
        "restarted). Exit status 0 when ok, 1 when degraded or not answering, 3 when not running.",
    )
    p.add_argument("--rundir", metavar="DIR", help="the daemon's rundir (default $OVS_RUNDIR or /var/run/openvswitch)")
    p.add_argument("--timeout", type=float, default=5, metavar="SECONDS",
                   help="how long to wait for the daemon's answer (default 5)")
    p.set_defaults(func=cmd_status)

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

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--rundir", metavar="DIR",
                       help="the switch's rundir; VMs live in DIR/vms (default $OVS_RUNDIR or /var/run/openvswitch)")
    where.add_argument("--db", metavar="unix:PATH", help="OVSDB of the switch (default unix:<rundir>/db.sock)")
    where.add_argument("-v", "--verbose", action="store_true", help="say what is being done")
    where.add_argument("--sysfs", metavar="DIR", default="/sys", help=argparse.SUPPRESS)     # simulations
    where.add_argument("--netlink", metavar="unix:PATH", default="", help=argparse.SUPPRESS)  # simulations

    s = vm.add_parser(
        "start", parents=[where], help="start a guest whose NICs are switch ports",
        description="Start QEMU with guest RAM in a shared memfd (vhost-user needs it), its NICs as switch ports "
        "(created in OVSDB), a QMP socket and a logged serial console, detached. Waits until QEMU runs and the "
        "guest prints its ready line; on failure the last console lines are shown and QEMU, ports and taps are "
        "removed (the VM's directory keeps the logs). "
        "Without --kernel/--disk the test image (pyvswitch vm image build) boots. With only NAME, a stopped VM "
        "starts again with its saved configuration.",
        epilog=NIC_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("name", help="VM name (letters, digits, '_', '.', '-')")
    s.add_argument("--memory", metavar="SIZE", help="guest RAM, e.g. 256M, 2G (default 256M)")
    s.add_argument("--cpus", type=int, metavar="N", help="virtual CPUs (default 1)")
    s.add_argument("--kernel", metavar="FILE", help="kernel to boot directly (default: the test image's)")
    s.add_argument("--initrd", metavar="FILE", help="initramfs for --kernel")
    s.add_argument("--append", metavar="TEXT", help="more kernel command line")
    s.add_argument("--disk", action="append", default=[], metavar="FILE[,format=F]",
                   help="a virtio disk, raw or qcow2 (without format= the file's header decides, at creation)")
    s.add_argument("--nic", action="append", default=[], metavar="KIND,...", help="a NIC (repeat); see below")
    s.add_argument("--ip", metavar="ADDR/LEN", help="the first NIC's address (the test image's ip=)")
    s.add_argument("--accel", choices=("kvm", "tcg"), help="override the accelerator 'vm check' picks")
    s.add_argument("--hugepages", action="store_true", help="guest RAM from hugepages (memfd hugetlb)")
    s.add_argument("--qemu", metavar="PATH", help="QEMU binary (default qemu-system-x86_64 on PATH)")
    s.add_argument("--ready", metavar="TEXT",
                   help="wait for a console line containing TEXT (the test image's ready line is waited for "
                   "without it)")
    s.add_argument("--boot-timeout", type=float, default=120, metavar="SECONDS",
                   help="how long to wait for the ready line (default 120)")
    s.add_argument("--no-wait", action="store_true", help="return once QEMU runs, without waiting for the guest")
    s.set_defaults(func=cmd_vm_start)

    s = vm.add_parser("stop", parents=[where], help="power a guest off (ACPI, then quit) and remove its ports",
                      description="Press the ACPI power button (QMP system_powerdown); if the guest has not powered "
                      "off after --timeout seconds QEMU is told to quit (then killed). The VM's ports and taps are "
                      "removed; its directory (config, console log) stays.")
    s.add_argument("name")
    s.add_argument("--timeout", type=float, default=30, metavar="SECONDS",
                   help="wait this long for the guest to power off (default 30)")
    s.set_defaults(func=cmd_vm_stop)
    s = vm.add_parser("list", parents=[where], help="the VMs and their state", description="One line per VM.")
    s.set_defaults(func=cmd_vm_list)
    s = vm.add_parser("status", parents=[where], help="one VM: state, accelerator, NICs, ports, addresses",
                      description="State (from QMP), pid, accelerator and why, and per NIC its MAC, port, "
                      "ofport and link state (from OVSDB) and the guest's addresses. Exit status 3 when "
                      "its QEMU is not running.")
    s.add_argument("name")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_vm_status)
    s = vm.add_parser("console", parents=[where], help="attach to a guest's serial console",
                      description="On a terminal: interactive, Ctrl-] detaches. From a pipe: sends stdin, then "
                      "prints the output until the console is quiet for --idle seconds. Everything the guest "
                      "prints is also in <rundir>/vms/NAME/console.log (--log prints it).")
    s.add_argument("name")
    s.add_argument("--log", action="store_true", help="print the console log and exit")
    s.add_argument("--idle", type=float, default=2, metavar="SECONDS",
                   help="from a pipe: exit once the console has been quiet this long after stdin ends (default 2)")
    s.set_defaults(func=cmd_vm_console)
    s = vm.add_parser("delete", parents=[where], help="forget a stopped VM",
                      description="Remove a stopped VM's directory: its saved configuration and logs.")
    s.add_argument("name")
    s.set_defaults(func=cmd_vm_delete)
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
