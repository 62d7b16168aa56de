"""OpenFlow: the message codec (``codec``); the agent and flow tables come next."""
