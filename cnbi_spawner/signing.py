"""Signed launch links: an LMS (or a course author) mints them, ``/tmplogin`` checks them.

A signed link carries two extra parameters:

- ``exp``: expiry, whole seconds since the Unix epoch;
- ``sig``: ``base64url(HMAC-SHA256(key, canonical))`` without padding.

``canonical`` is ``cnbi-tmplogin-v1\\n`` followed by every parameter except ``sig``
(``exp`` included), sorted by name then value, each name and value UTF-8 and
percent-encoded with nothing left unescaped, joined as ``name=value`` with ``&``.
Encoding both parts makes the string unambiguous (no ``a=b&c`` vs ``a=b%26c`` confusion),
and sorting makes it independent of parameter order, so any language can mint links:

    canonical = "cnbi-tmplogin-v1\\n" + "&".join(
        quote(k, safe="") + "=" + quote(v, safe="") for k, v in sorted(params.items()))

Checks (all failures raise :class:`cnbi_spawner.errors.BadSignature`, 403): ``sig`` present
and well-formed, ``exp`` present and an integer, the signature matches (compared with
:func:`hmac.compare_digest`), the link has not expired, and its expiry is not further
away than ``max_ttl`` (so a leaked key cannot mint links that live for ever). Every
parameter is covered, so changing, adding or removing one invalidates the link.

Launch tickets: on a hub with a signing key, the checked link's launch is bound to the
anonymous user ``/tmplogin`` creates for it. The handler adds ``ticket`` =
``base64url(HMAC-SHA256(key, "cnbi-ticket-v1\n" + user + "\n" + canonical options))`` to
the spawn options, and the spawner starts an anonymous user's server only with a ticket for
exactly those options (:func:`verify_ticket`), so a signed-in learner cannot swap the
course afterwards through ``/hub/spawn``, the form or the REST API.

The key is never logged or echoed. ``cnbi-hub sign-link`` (:func:`main`) prints a link.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import os
import sys
import time
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlencode

from traitlets import Bytes, Integer, TraitError, Unicode, Union, default, validate
from traitlets.config import Configurable

from .errors import BadSignature
from .launch_grammar import COURSE, EXP, NOTEBOOK, SIG, SIZE, TICKET, QueryValueError, flatten

#: where LinkSigning reads the key when it is not configured
SIGNING_KEY_ENV = "CNBI_LINK_SIGNING_KEY"
_DOMAIN = b"cnbi-tmplogin-v1\n"
_TICKET_DOMAIN = b"cnbi-ticket-v1\n"
_SIG_LEN = 43  # base64url of 32 bytes, unpadded


def as_key(key: bytes | str) -> bytes:
    """The HMAC key as bytes (``str`` keys are UTF-8 encoded)."""
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def _single(params: Mapping[str, object]) -> dict[str, str]:
    """Flatten a query mapping (values may be lists of str/bytes); repeats are refused."""
    flat: dict[str, str] = {}
    for name, value in params.items():
        try:
            flat[str(name)] = flatten(value)
        except QueryValueError as e:
            if e.reason == "encoding":
                raise BadSignature("This launch link is not valid UTF-8.") from None
            if e.reason != "type":
                raise BadSignature(
                    "This launch link repeats a parameter, so it cannot be checked."
                ) from None
            flat[str(name)] = str(value)  # e.g. a number from a caller's own mapping
    return flat


def canonical(params: Mapping[str, str]) -> bytes:
    """The exact bytes that are signed: every parameter but ``sig``, sorted and encoded."""
    pairs = sorted((k, v) for k, v in params.items() if k != SIG)
    body = "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in pairs)
    return _DOMAIN + body.encode("utf-8")


def signature(params: Mapping[str, str], key: bytes | str) -> str:
    """``base64url(HMAC-SHA256(key, canonical(params)))`` without padding."""
    digest = hmac.new(as_key(key), canonical(params), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_params(params: Mapping[str, str], key: bytes | str, expires: int) -> dict[str, str]:
    """A copy of ``params`` with ``exp`` (the given epoch second) and ``sig`` added."""
    if not as_key(key):
        raise ValueError("the signing key is empty")
    signed = {k: str(v) for k, v in params.items() if k not in (SIG, EXP)}
    signed[EXP] = str(int(expires))
    signed[SIG] = signature(signed, key)
    return signed


def verify_params(
    params: Mapping[str, object],
    key: bytes | str,
    now: float,
    *,
    max_ttl: int | None = None,
) -> None:
    """Raise :class:`BadSignature` unless ``params`` carry a valid, unexpired signature.

    ``params`` is the request's query (values may be lists, as tornado gives them).
    ``max_ttl`` (seconds) bounds how far in the future ``exp`` may lie; ``None`` or 0: no bound.
    """
    flat = _single(params)
    sig = flat.get(SIG)
    if not sig:
        raise BadSignature("This hub only accepts signed launch links, and this one is not signed.")
    exp_text = flat.get(EXP, "")
    if not exp_text:
        raise BadSignature("This launch link has no expiry time, so it cannot be accepted.")
    if len(sig) != _SIG_LEN or not exp_text.isascii() or not exp_text.isdigit():
        raise BadSignature("This launch link's signature is not valid.")
    try:
        given = base64.urlsafe_b64decode(sig + "=")
    except (binascii.Error, ValueError):
        raise BadSignature("This launch link's signature is not valid.") from None
    expected = hmac.new(as_key(key), canonical(flat), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise BadSignature("This launch link's signature is not valid.")
    exp = int(exp_text)
    if exp < now:
        raise BadSignature("This launch link has expired. Please ask for a new one.")
    if max_ttl and exp - now > max_ttl:
        raise BadSignature("This launch link is valid for longer than this hub allows.")


def launch_ticket(key: bytes | str, user: str, options: Mapping[str, str]) -> str:
    """The ticket binding ``user`` to these canonical launch options (see module doc)."""
    body = {k: v for k, v in options.items() if k != TICKET}
    message = _TICKET_DOMAIN + user.encode("utf-8") + b"\n" + canonical(body)
    digest = hmac.new(as_key(key), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_ticket(key: bytes | str, user: str, options: Mapping[str, str], ticket: str) -> None:
    """Raise :class:`BadSignature` unless ``ticket`` binds ``user`` to ``options``."""
    expected = launch_ticket(key, user, options)
    if not isinstance(ticket, str) or not hmac.compare_digest(
        ticket.encode("utf-8", "replace"), expected.encode("ascii")
    ):
        raise BadSignature(
            "This guest session may only start the course its link was made for. "
            "Open the course link again to start another course."
        )


def launch_link(base_url: str, params: Mapping[str, str]) -> str:
    """``<base_url>/tmplogin?<params>`` with ``course`` first and ``sig`` last (readability)."""
    order = {COURSE: 0, NOTEBOOK: 1, SIZE: 2, EXP: 8, SIG: 9}
    pairs = sorted(params.items(), key=lambda kv: (order.get(kv[0], 5), kv[0]))
    return base_url.rstrip("/") + "/tmplogin?" + urlencode(pairs, quote_via=quote)


class LinkSigning(Configurable):
    """The link-signing settings: one key and one lifetime for the hub and the ``cnbi`` service.

    The hub (``/tmplogin``, launch tickets) checks links with them; the service signs the
    links it hands out (catalog, finished builds) with them. Both load ``jupyterhub_config.py``,
    so both read the same ``c.LinkSigning``.
    """

    key = Union(
        [Bytes(), Unicode()],
        help=f"""HMAC-SHA256 key for signed launch links. When set, /tmplogin requires a
        valid, unexpired `sig`/`exp` (403 otherwise), guests get launch tickets, and the cnbi
        service signs the links it shows. Defaults to ${SIGNING_KEY_ENV}. Never logged.
        Mint links with `cnbi-hub sign-link`.""",
    ).tag(config=True)

    @default("key")
    def _default_key(self) -> str:
        return os.environ.get(SIGNING_KEY_ENV, "")

    max_ttl = Integer(
        30 * 24 * 3600,
        help="""Longest validity, in seconds from now, a signed link may claim (a leaked key
        cannot mint links that live for ever); links the cnbi service signs are valid this
        long.""",
    ).tag(config=True)

    @validate("max_ttl")
    def _positive_ttl(self, proposal: dict) -> int:
        if proposal["value"] <= 0:
            raise TraitError("LinkSigning.max_ttl must be a positive number of seconds")
        return int(proposal["value"])

    @property
    def key_bytes(self) -> bytes:
        """The key as bytes; ``b""`` when links are not signed."""
        return as_key(self.key or b"")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnbi-hub sign-link",
        description="Print a signed /tmplogin launch link (for hubs with a link signing key).",
    )
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument(
        "--key-env", metavar="VAR", help="read the signing key from this environment variable"
    )
    key.add_argument("--key", metavar="KEY", help="the signing key (prefer --key-env)")
    parser.add_argument("--course", required=True, help="course image name, alias or tag")
    parser.add_argument("--notebook", help="notebook path inside the home directory")
    parser.add_argument("--size", help="resource package name")
    parser.add_argument(
        "--ttl", type=int, required=True, metavar="SECONDS", help="how long the link stays valid"
    )
    parser.add_argument(
        "--base-url",
        default="",
        metavar="URL",
        help="public hub URL, e.g. https://hub.example.edu (default: print a relative link)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.key_env:
        key = os.environ.get(args.key_env, "")
        if not key:
            parser.error(f"environment variable {args.key_env} is empty or not set")
    else:
        key = args.key or ""
        if not key:
            parser.error("--key is empty")
    if args.ttl <= 0:
        parser.error("--ttl must be a positive number of seconds")
    params = {"course": args.course}
    if args.notebook:
        params["notebook"] = args.notebook
    if args.size:
        params["size"] = args.size
    signed = sign_params(params, key, int(time.time()) + args.ttl)
    print(launch_link(args.base_url, signed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
