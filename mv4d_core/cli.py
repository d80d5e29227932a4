"""The ``mv4d`` command line: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Command modules keep heavy imports (torch, rosbags, the devkit) inside
``run`` so ``mv4d --help`` stays fast; a command whose module is not there yet is not listed.

A user error (a bag that cannot be read, an unknown topic, a bad parameter, an unreadable
checkpoint, a missing file, ...) in any command ends in one line ``mv4d <command>: <cause>``
and exit status 2, never a traceback: the error classes of :data:`USER_ERRORS` carry messages that
name the cause and the fix. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mv4d_core.utils.user_errors import user_error_message

#: subcommand -> module implementing it.
COMMANDS: dict[str, str] = {
    "synth": "mv4d_core.data.synth.command",
    "info": "mv4d_core.data.info_command",
    "convert": "mv4d_core.data.convert_command",
    "train": "mv4d_core.training.command",
    "eval": "mv4d_core.eval.command",
    "eval-flow": "mv4d_core.eval.flow_command",
    "infer": "mv4d_core.pipeline.infer_command",
    "export": "mv4d_core.export.command",
    "demo": "mv4d_core.demo.command",
}


def _load(name: str):
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as e:
        if e.name and COMMANDS[name].startswith(e.name):
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mv4d", description="mv4d: label-free 4D perception for surround-camera rigs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        message = user_error_message(e)
        if message is None:
            raise
        print(f"mv4d {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
