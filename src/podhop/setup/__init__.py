"""Preparing the machine for podhop: Debian packages, sysctls, a working CRIU, base images.

Why a package of its own: setup changes the host (installs packages, writes
/proc/sys, builds root filesystems with debootstrap) and is run once, by
``podhop setup``; everything else in podhop only reads what it left behind
(``settings.paths()``). Keeping it apart keeps those side effects out of the
code paths that run pods, and lets ``podhop doctor`` explain what is missing
without installing anything.
"""
