"""``python -m p2pkube`` runs the same CLI as the ``p2pkube`` console script."""

from p2pkube.cli.main import main

if __name__ == "__main__":
    main()
