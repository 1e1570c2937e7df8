"""The local backend: a multi-node cluster made of network namespaces on one machine."""
