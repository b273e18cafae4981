"""The ``cnbi-hub`` command: one entry point, one subcommand per concern.

Each subcommand lives in the module that owns it and exposes ``main(argv)``;
this module only dispatches, so ``cnbi-hub --help`` stays fast (nothing heavy
is imported until a subcommand runs).
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module exposing ``main(argv) -> int | None``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cnbi_spawner.demo", "run dev cluster + hub + proxy + service at 127.0.0.1:8000"),
    "devcluster": ("cnbi_spawner.devcluster.cli", "serve the embedded Kubernetes API emulator"),
    "service": ("cnbi_spawner.service.app", "run the hub-managed cnbi service"),
    "images": ("cnbi_spawner.images.cli", "show the known-image registry (or prePuller YAML)"),
    "sign-link": ("cnbi_spawner.signing", "print a signed /tmplogin launch link"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnbi-hub",
        description="Tools for cnbi-spawner hubs. Run `cnbi-hub SUBCOMMAND --help` for details.",
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
