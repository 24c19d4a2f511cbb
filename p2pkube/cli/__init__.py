"""The ``p2pkube`` command line: ``main`` runs it, ``output`` formats what it prints."""

from p2pkube.cli.main import cli, main

__all__ = ["cli", "main"]
