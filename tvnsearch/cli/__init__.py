"""The ``tvnsearch`` command: ``main(argv) -> int`` and its subcommands; bad input exits 2."""

from tvnsearch.cli.main import main, run

__all__ = ["main", "run"]
