"""podhop: live migration of running pods between nodes, measured and decided.

The package is layered; each layer imports only the layers below it:

    cli            thin command line over the library API
    backends       a cluster backend (``base`` is the interface); ``local`` runs
                   nodes as network namespaces and pods under runc on one machine,
                   with its own apply/scheduling (the "API server") and top
    runtime, net   narrow wrappers around runc, the container monitor, images, ip/iptables/tc
    policies       pure placement scoring (never imports a backend)
    objects, store Kubernetes-shaped objects parsed from YAML; SQLite state

See ``docs/architecture.md`` for the why of this shape.
"""

__version__ = "0.1.0"
