"""Thin wrappers around ``ip``, ``iptables-restore`` and ``tc``: the network layer.

Nothing here knows about pods or services; it creates namespaces, links,
addresses, routes, NAT chains and shapers, and removes them again. The local
backend composes these into node and pod networks.
"""
