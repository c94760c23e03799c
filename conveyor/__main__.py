"""``python -m conveyor`` does what the ``conveyor`` command does."""

from conveyor.cli import main

main()
