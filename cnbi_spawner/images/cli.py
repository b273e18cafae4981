"""``cnbi-hub images``: show the known-image registry as an operator sees it.

    cnbi-hub images [--kubeconfig PATH] [--namespace NS]... [--static FILE]
                    [--json | --prepuller] [--no-watch] [--timeout S]

Lists every image the hub knows (key, aliases, image, digest-pinned or not, flags),
then the tags that were left out and why (failed import, not imported yet, no label)
and the parsing warnings: the answer to "why can't my course be launched?".
``--prepuller`` prints Zero to JupyterHub ``prePuller.extraImages`` values for every
launchable image instead (z2jh renders ``image: <name>:<tag>``, so a digest-pinned
image is written as ``tag: <tag>@sha256:…``, which pulls by digest).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import sys
from pathlib import Path

import yaml

from ..launch_grammar import split_image_ref
from .model import KnownImage


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnbi-hub images", description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG / in-cluster)")
    p.add_argument(
        "--namespace", "-n", action="append", dest="namespaces", help="namespace (repeatable)"
    )
    p.add_argument("--selector", help="label selector (default: the registry's)")
    p.add_argument("--static", type=Path, help="static images file (JSON or YAML, dict or list)")
    p.add_argument("--no-watch", action="store_true", help="static images only, no cluster")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON")
    out.add_argument("--prepuller", action="store_true", help="print z2jh prePuller YAML")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the sync")
    return p


def flags(image: KnownImage) -> str:
    out = []
    if image.recommended:
        out.append("recommended")
    if image.default:
        out.append("default")
    if image.outdated:
        out.append("outdated")
    if image.phase and image.phase != "Succeeded":
        out.append(f"phase={image.phase}")
    if image.requires_gpu:
        out.append("gpu")
    if image.notebooks:
        out.append(f"notebooks={len(image.notebooks)}")
    if not image.launchable:
        out.append("NOT-LAUNCHABLE")
    return ",".join(out)


def table(images: list[KnownImage]) -> str:
    rows = [("KEY", "ALIASES", "IMAGE", "PINNED", "FLAGS")]
    for i in images:
        rows.append((i.key, ",".join(i.aliases), i.image, "yes" if i.pinned else "no", flags(i)))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    return "\n".join("  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in rows)


def image_json(image: KnownImage) -> dict:
    data = dataclasses.asdict(image)
    data["launchable"] = image.launchable
    return data


def safe_name(image: KnownImage, taken: set[str]) -> str:
    """A z2jh extraImages key: the init container is ``image-pull-<key>`` (DNS label, ≤63)."""
    base = re.sub(r"[^a-z0-9]+", "-", image.key.lower()).strip("-") or "image"
    name = base[:52].strip("-")
    if name != base or name in taken:
        suffix = hashlib.sha256(image.key.encode()).hexdigest()[:8]
        name = f"{base[:43].strip('-')}-{suffix}"
    taken.add(name)
    return name


def prepuller_values(images: list[KnownImage]) -> dict:
    extra: dict[str, dict[str, str]] = {}
    seen_refs: set[str] = set()
    taken: set[str] = set()
    for image in images:
        parts = split_image_ref(image.image)
        if not image.launchable or not parts or image.image in seen_refs:
            continue
        seen_refs.add(image.image)
        repo, tag, digest = parts
        tag = tag or "latest"
        extra[safe_name(image, taken)] = {"name": repo, "tag": f"{tag}@{digest}" if digest else tag}
    return {"prePuller": {"extraImages": extra}}


def load_static(path: Path) -> object:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


async def collect(args: argparse.Namespace):
    from .registry import ImageRegistry

    kwargs: dict = {"watch_imagestreams": not args.no_watch, "resync_period": 5.0}
    if args.kubeconfig:
        kwargs["kubeconfig"] = args.kubeconfig
    if args.namespaces:
        kwargs["namespaces"] = args.namespaces
    if args.selector:
        kwargs["label_selector"] = args.selector
    if args.static:
        kwargs["static_images"] = load_static(args.static)
    # problems are printed below the table instead of logged: a private, silent logger
    quiet = logging.getLogger("cnbi_spawner.images.cli.registry")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    reg = ImageRegistry(log=quiet, **kwargs)
    try:
        await reg.start()
        synced = await reg.wait_synced(args.timeout)
    finally:
        await reg.stop()
    return reg, synced


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        reg, synced = asyncio.run(collect(args))
    except Exception as e:  # config errors: say what, no traceback
        print(f"cnbi-hub images: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if not synced:
        print("cnbi-hub images: could not list ImageStreams (API unreachable?)", file=sys.stderr)
        return 1
    images = reg.images()
    skipped = [(k, why, s) for s, items in sorted(reg.skipped.items()) for k, why in items]
    problems = [(s, p) for s, items in sorted(reg.problems.items()) for p in items]
    if args.prepuller:
        print(yaml.safe_dump(prepuller_values(images), sort_keys=False), end="")
    elif args.json:
        data = {
            "status": reg.status(),
            "images": [image_json(i) for i in images],
            "skipped": [{"key": k, "reason": why, "source": s} for k, why, s in skipped],
            "problems": [{"source": s, "problem": p} for s, p in problems],
        }
        print(json.dumps(data, indent=2))
    else:
        print(table(images))
        if skipped:
            print("\nNot listed:")
            for key, why, _source in skipped:
                print(f"  {key}: {why}")
        if problems:
            print("\nWarnings:")
            for source, problem in problems:
                print(f"  {source}: {problem}")
    return 0
