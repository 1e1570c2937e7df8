"""Placement and migration policies: pure decision code.

Why: deciding where a pod should run must be testable without root, runc or
network namespaces, and must be explainable from numbers alone. Modules here
take plain values (:class:`~podhop.policies.scoring.NodeState`,
:class:`~podhop.objects.model.Resources`) and return decisions; they never
import a backend, touch the store, or run a command. The control layer
gathers the state, calls a policy, and carries out the result.
"""
