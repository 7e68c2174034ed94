"""One module per ``labclip`` command, each with ``add_parser(subparsers)`` and ``run(args)``."""
