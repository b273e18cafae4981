"""The ``cnbi-devcluster`` command: the dev cluster and the demo, one subcommand each.

Dispatched like ``cnbi-hub`` (each subcommand's module exposes ``main(argv)``), so
``cnbi-devcluster --help`` imports nothing heavy.
"""

from __future__ import annotations

import sys

from cnbi_spawner.cli import dispatch

#: subcommand -> (module exposing ``main(argv) -> int | None``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("cnbi_devcluster.serve", "serve the embedded Kubernetes API emulator"),
    "demo": ("cnbi_devcluster.demo", "run dev cluster + hub + proxy + service at 127.0.0.1:8000"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(
        "cnbi-devcluster",
        "The cnbi-spawner dev cluster (a Kubernetes API emulator) and demo. "
        "Run `cnbi-devcluster SUBCOMMAND --help` for details.",
        SUBCOMMANDS,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
