"""Narrow wrappers around what runs a pod: images, runc, the container monitor, CRIU."""
