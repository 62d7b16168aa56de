"""The translator: a packet's walk through the OpenFlow tables, turned into datapath actions and a
megaflow mask (Open vSwitch's xlate). See ``xlate/translate.py``."""
