"""The edge simulator: policies side by side on a generated (or loaded) moving world.

Why: migration policies must be compared at scales and over durations no
local cluster reaches, with the same code the live rebalancer runs. The
simulator imports only :mod:`podhop.policies` and :mod:`podhop.objects` —
never a backend — so what it measures is what the cluster would do.
"""
