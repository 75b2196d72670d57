"""``python -m duratask.cli``: the same as the ``duratask`` command."""

from duratask.cli.main import main

main(prog_name="duratask")
