"""The Kubernetes backend: any cluster from a kubeconfig (EKS, or podhop's own ``--kind kubernetes``).

``api`` connects and explains failures, ``views`` turns API objects into the backend interface's values,
``backend`` is the interface, ``agent`` talks to podhop's node agent, ``migration`` moves a pod.
"""
