"""`vidyn` subcommands, one module each.

A module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules import their heavy dependencies inside ``run`` so that ``vidyn --help`` stays fast.
"""
