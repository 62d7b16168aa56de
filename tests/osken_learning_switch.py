"""A learning switch written on os-ken's API (OpenFlow 1.3), and a runner for it.

os-ken 4.x ships no sample applications and no ``osken-manager``, so the test carries this app:
on connect it installs a table-miss flow that sends packets to the controller; on a packet-in it
learns the source MAC's port, installs ``in_port,eth_src,eth_dst -> output`` for known
destinations and sends the packet on (flooding when the destination is unknown).

Run: ``python tests/osken_learning_switch.py PORT`` listens on 127.0.0.1:PORT and prints ``ready``.
"""

from __future__ import annotations

import sys

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ethernet, packet
from os_ken.ofproto import ofproto_v1_3


class LearningSwitch(app_manager.OSKenApp):
    """MAC learning with flows installed per (in_port, src, dst)."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.macs: dict[int, dict[str, int]] = {}

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def features(self, ev: object) -> None:
        dp = ev.msg.datapath  # type: ignore[attr-defined]
        ofp, parser = dp.ofproto, dp.ofproto_parser
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        self.add_flow(dp, 0, parser.OFPMatch(), actions)
        print(f"switch {dp.id:016x} connected", flush=True)

    @staticmethod
    def add_flow(dp: object, priority: int, match: object, actions: list) -> None:
        ofp, parser = dp.ofproto, dp.ofproto_parser  # type: ignore[attr-defined]
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        dp.send_msg(parser.OFPFlowMod(datapath=dp, priority=priority, match=match,  # type: ignore[attr-defined]
                                      instructions=inst))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev: object) -> None:
        msg = ev.msg  # type: ignore[attr-defined]
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        eth = packet.Packet(msg.data).get_protocols(ethernet.ethernet)[0]
        table = self.macs.setdefault(dp.id, {})
        table[eth.src] = in_port
        out_port = table.get(eth.dst, ofp.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofp.OFPP_FLOOD:
            self.add_flow(dp, 1, parser.OFPMatch(in_port=in_port, eth_src=eth.src, eth_dst=eth.dst), actions)
        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id, in_port=in_port, actions=actions,
                                        data=data))
        print(f"packet-in {eth.src} -> {eth.dst} port {in_port} -> {out_port}", flush=True)


def main(port: int) -> None:
    """Listen for switches on 127.0.0.1:``port`` and run the app until killed."""
    from os_ken import cfg
    from os_ken.lib import hub

    cfg.CONF(["--ofp-tcp-listen-port", str(port), "--ofp-listen-host", "127.0.0.1"], project="os_ken")
    manager = app_manager.AppManager.get_instance()
    manager.load_apps([__name__ if __name__ != "__main__" else "tests.osken_learning_switch"])
    contexts = manager.create_contexts()
    services = manager.instantiate_apps(**contexts)
    print("ready", flush=True)
    hub.joinall(services)


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])
    main(int(sys.argv[1]))
