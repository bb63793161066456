"""``python -m modelship_server``: the same as the ``modelship-server`` command (cli.main)."""

from modelship_server.cli import main

if __name__ == "__main__":
    main()
