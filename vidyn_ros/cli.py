"""The ``vidyn`` command. Subcommands live in vidyn_ros/commands/ (one module each, discovered at start-up)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from vidyn_ros.errors import VidynError


def _command_modules() -> list:
    import vidyn_ros.commands as pkg

    mods = [importlib.import_module(f"{pkg.__name__}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]
    return sorted((m for m in mods if hasattr(m, "NAME")), key=lambda m: getattr(m, "ORDER", 50))


class _Parser(argparse.ArgumentParser):
    """Usage errors (a flag out of range, a missing argument) in one line, exit code 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vidyn",
        description="vidyn_ros: multi-camera Gaussian scenes, particle dynamics and visual MPC.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    parser = build_parser()
    args = parser.parse_args(argv)
    # Our own INFO messages, but only warnings from libraries (PyOpenGL alone says "INFO OpenGL.acceleratesupport: No
    # OpenGL_accelerate module loaded" in every command that renders); --debug shows everything.
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("vidyn_ros").setLevel(logging.DEBUG if args.debug else logging.INFO)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = int(args._run(args) or 0)
    except VidynError as err:
        if args.debug:
            raise
        print(f"vidyn {args.command}: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"vidyn {args.command}: interrupted", file=sys.stderr)
        code = 130
    except Exception as err:  # a bug, not bad input: still one line, with a way to get the traceback
        if args.debug:
            raise
        msg = f"vidyn {args.command}: internal error: {type(err).__name__}: {err} (rerun with --debug)"
        print(msg, file=sys.stderr)
        code = 1
    from vidyn_ros.workers import exit_process

    exit_process(code)  # a node's thread still busy after Ctrl-C (a scene inside torch): do not wait for it
    return code


if __name__ == "__main__":
    sys.exit(main())
