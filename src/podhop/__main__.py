"""``python -m podhop``: the same as the ``podhop`` command."""

from podhop.cli.main import main

main()
