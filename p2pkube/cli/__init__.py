"""The ``p2pkube`` command line: ``p2pkube.cli.main`` runs it, ``output`` formats what it prints.

Nothing is imported here: a command imports only the modules it needs (``main.LazyGroup``), so
importing one CLI module does not load every command's."""
