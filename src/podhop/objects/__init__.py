"""Kubernetes-shaped objects: quantities, the immutable data model, and the YAML loader.

Everything above this layer (backends, CLI) works with the frozen
dataclasses of :mod:`podhop.objects.model`; only :mod:`podhop.objects.manifests`
knows about YAML and validation, so the rest of podhop never sees a raw dict.
"""
