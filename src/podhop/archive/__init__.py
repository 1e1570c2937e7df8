"""Checkpoint archives: the shared layout, a checked reader, an atomic writer, root filesystem diffs.

This layer sits beside ``runtime``: it knows files and CRIU images, not clusters.
"""
