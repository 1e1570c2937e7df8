"""Live migration: plan a pod's move (a pure value), then execute it phase by phase.

``plan`` builds a :class:`~podhop.migrate.plan.MigrationPlan` — which pod, from
where, to where, how, and the phases that will run — without touching the
machine; the simulator can cost it. ``engine`` executes a plan on the local
backend with CRIU and runc, timing each phase and undoing what it did if any
phase fails. ``probe`` measures downtime from the outside; ``transfer`` moves
files across the link; ``archive`` reads and writes checkpoint archives in the
layout Podman and CRI-O use.
"""
