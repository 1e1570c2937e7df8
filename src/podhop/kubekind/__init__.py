"""``--kind kubernetes``: a real Kubernetes cluster on this machine, with checkpoint and restore.

See ``cluster`` for the shape, ``components`` for how the binaries are built, and
``docs/kubernetes-kind.md`` (summarised in ``docs/architecture.md``) for the traps.
"""
