"""``--kind kubernetes``: a real Kubernetes cluster on this machine, with checkpoint and restore.

See ``cluster`` for the shape, ``components`` for how the binaries are built, and
``/work/k8s-lab/NOTES.md`` (summarised in ``docs/architecture.md``) for the traps.
"""
