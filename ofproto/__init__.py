"""OpenFlow control side: the match field registry (``fields``); rules, tables and groups to come."""
