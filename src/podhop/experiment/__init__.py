"""Experiments: the seed's whole procedure — cluster, workload, load, top, hotspot, migration
under traffic — as one validated spec and one command, with every figure written to a results folder.

``spec`` is the YAML model; ``runner`` runs it step by step (``repetition`` is one
baseline/during/after cycle); ``load`` wraps ``hey``; ``recorder`` samples ``top`` in the
background; ``selection`` chooses the pod and node from those samples; ``environment`` makes and
removes the cluster and workload; ``results`` writes and reads the results folder and computes
statistics over repetitions. ``podhop.report`` turns a results folder into Markdown and HTML.
"""
