"""The ``cnbi-hub`` command: one entry point, one subcommand per concern.

Each subcommand lives in the module that owns it and exposes ``main(argv)``;
this module only dispatches, so ``cnbi-hub --help`` stays fast (nothing heavy
is imported until a subcommand runs). :func:`dispatch` is the one dispatcher, also
used by the dev cluster's ``cnbi-devcluster`` command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module exposing ``main(argv) -> int | None``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "service": ("cnbi_spawner.service.app", "run the hub-managed cnbi service"),
    "images": ("cnbi_spawner.images.cli", "show the known-image registry (or prePuller YAML)"),
    "sign-link": ("cnbi_spawner.signing", "print a signed /tmplogin launch link"),
    "learner-lab": ("cnbi_spawner.learner_lab", "copy the learner-lab extension (init container)"),
}


def build_parser(
    prog: str, description: str, subcommands: dict[str, tuple[str, str]]
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, (_module, help_text) in subcommands.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def dispatch(
    prog: str, description: str, subcommands: dict[str, tuple[str, str]], argv: list[str] | None
) -> int:
    """Run ``argv[0]``'s module ``main(argv[1:])``; usage (exit 2) for a missing/unknown one."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog, description, subcommands)
    if not argv or argv[0] not in subcommands:
        parser.parse_args(argv or ["--help"])
        return 2
    module = importlib.import_module(subcommands[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


def main(argv: list[str] | None = None) -> int:
    return dispatch(
        "cnbi-hub",
        "Tools for cnbi-spawner hubs. Run `cnbi-hub SUBCOMMAND --help` for details.",
        SUBCOMMANDS,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
