"""``cnbi-devcluster serve``: serve the dev cluster until SIGINT/SIGTERM/SIGHUP.

Prints where the API and the kubeconfig are, so other processes (a hub, the registry CLI)
can use it: ``KUBECONFIG=<path> jupyterhub ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from .cluster import DevCluster


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnbi-devcluster serve",
        description="Serve the dev cluster (an embedded Kubernetes API emulator) until SIGTERM.",
    )
    p.add_argument("--port", type=int, default=0, help="API port on 127.0.0.1 (0: a free one)")
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="where to write the kubeconfig (default: STATE_DIR/kubeconfig.yaml)",
    )
    p.add_argument(
        "--runtime",
        choices=("process", "stub"),
        default="process",
        help="process: real jupyterhub-singleuser per pod; stub: cheap fake servers",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".devcluster"),
        help="pod homes, logs and the kubeconfig live here",
    )
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="REPO=DIR",
        help="seed the homes of pods running this image repository from DIR",
    )
    p.add_argument(
        "--missing-image",
        action="append",
        default=[],
        metavar="REPO",
        help="make pulls of this image repository fail (ErrImagePull); others all pull",
    )
    p.add_argument("--token", default=None, help="bearer token (default: random)")
    p.add_argument("--tls", action="store_true", help="serve HTTPS with a throw-away CA")
    p.add_argument("--no-builds", action="store_true", help="do not run the build controller")
    p.add_argument("--log-level", default="INFO")
    return p


async def serve(args: argparse.Namespace) -> None:
    images = {}
    for item in args.image:
        repo, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"--image needs REPO=DIR, got {item!r}")
        images[repo] = Path(folder)
    cluster = DevCluster(
        args.state_dir,
        port=args.port,
        runtime=args.runtime,
        images=images,
        missing_images=args.missing_image,
        token=args.token,
        tls=args.tls,
        builds=not args.no_builds,
    )
    await cluster.start()
    if args.kubeconfig:
        cluster.write_kubeconfig(args.kubeconfig)
    where = args.kubeconfig or cluster.kubeconfig
    print(f"dev cluster API at {cluster.url}; kubeconfig: {where}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await cluster.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    asyncio.run(serve(args))
    return 0
