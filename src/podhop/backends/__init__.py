"""Cluster backends: what makes nodes, pods and services real.

``base`` declares the interface; ``local`` implements it on one Linux machine
(network namespaces, runc, iptables, CRIU). A Kubernetes backend (official
client, kubelet checkpoint API) is meant to slot in beside it.
"""
