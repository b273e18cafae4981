"""Signed launch links: round trips, every tamper case, expiry, and the sign-link command."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from cnbi_spawner import cli
from cnbi_spawner.errors import BadSignature
from cnbi_spawner.signing import (
    canonical,
    launch_ticket,
    sign_params,
    signature,
    verify_params,
    verify_ticket,
)

KEY = b"k" * 32
NOW = 1_800_000_000
PARAMS = {"course": "uai_source-uai.intro", "notebook": "lectures/lecture1/mod5 lec1.ipynb"}


def signed(params=PARAMS, key=KEY, exp=NOW + 600):
    return sign_params(params, key, exp)


def as_query(params):
    """The shape tornado hands us: name -> list of bytes."""
    return {k: [v.encode()] for k, v in params.items()}


@pytest.mark.parametrize(
    "params",
    [
        {"course": "a"},
        PARAMS,
        {"course": "ünïcødé", "notebook": "ordner/übung 1.ipynb", "size": "small"},
        {"course": "a&b=c", "notebook": "x%2Fy"},
        {},
    ],
)
def test_round_trip(params):
    s = signed(params)
    assert set(s) == set(params) | {"exp", "sig"}
    verify_params(s, KEY, NOW)
    verify_params(as_query(s), KEY, NOW)
    verify_params(s, KEY.decode(), NOW)  # str keys are their UTF-8 bytes


def test_parameter_order_does_not_matter_and_sig_is_base64url():
    s = signed()
    reordered = dict(reversed(list(s.items())))
    verify_params(reordered, KEY, NOW)
    assert len(s["sig"]) == 43 and set(s["sig"]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )


def test_canonical_form_is_unambiguous():
    assert canonical({"a": "b&c=d"}) != canonical({"a": "b", "c": "d"})
    assert canonical({"a": "1", "sig": "x"}) == canonical({"a": "1"})
    assert canonical({"b": "2", "a": "1"}) == b"cnbi-tmplogin-v1\na=1&b=2"


def _tamper(change):
    s = signed()
    change(s)
    return s


@pytest.mark.parametrize(
    "params, fragment",
    [
        (_tamper(lambda s: s.update(course="other")), "not valid"),
        (_tamper(lambda s: s.update(notebook="../etc/passwd")), "not valid"),
        (_tamper(lambda s: s.update(size="gpu")), "not valid"),  # added param
        (_tamper(lambda s: s.pop("notebook")), "not valid"),  # removed param
        (_tamper(lambda s: s.update(exp=str(NOW + 10**6))), "not valid"),  # extended expiry
        (
            _tamper(lambda s: s.update(sig=s["sig"][:-1] + ("A" if s["sig"][-1] != "A" else "B"))),
            "not valid",
        ),
        (_tamper(lambda s: s.update(sig=s["sig"][:40])), "not valid"),
        (_tamper(lambda s: s.update(sig="!" * 43)), "not valid"),
        (_tamper(lambda s: s.update(sig=signature({**s, "exp": "x"}, KEY), exp="x")), "not valid"),
        (_tamper(lambda s: s.update(exp="-1")), "not valid"),
        (_tamper(lambda s: s.pop("sig")), "not signed"),
        (_tamper(lambda s: s.update(sig="")), "not signed"),
        (_tamper(lambda s: s.pop("exp")), "no expiry"),
        (dict(PARAMS), "not signed"),
    ],
)
def test_tampered_links_are_refused(params, fragment):
    with pytest.raises(BadSignature) as info:
        verify_params(params, KEY, NOW)
    assert fragment in info.value.message
    assert info.value.status == 403


def test_wrong_key_is_refused():
    with pytest.raises(BadSignature):
        verify_params(signed(), b"another key entirely", NOW)


def test_repeated_parameters_are_refused():
    q = as_query(signed())
    q["course"] = [b"uai_source-uai.intro", b"other"]
    with pytest.raises(BadSignature, match="repeats"):
        verify_params(q, KEY, NOW)


def test_invalid_utf8_is_refused():
    q = as_query(signed())
    q["notebook"] = [b"\xff\xfe"]
    with pytest.raises(BadSignature):
        verify_params(q, KEY, NOW)


@pytest.mark.parametrize(
    "exp, now, max_ttl, ok",
    [
        (NOW + 10, NOW, None, True),
        (NOW, NOW, None, True),  # valid through its expiry second
        (NOW - 1, NOW, None, False),  # expired
        (NOW + 3600, NOW, 3600, True),
        (NOW + 3601, NOW, 3600, False),  # lives longer than the hub allows
        (NOW + 10**9, NOW, 0, True),  # 0: no bound
    ],
)
def test_expiry_and_max_ttl(exp, now, max_ttl, ok):
    s = signed(exp=exp)
    if ok:
        verify_params(s, KEY, now, max_ttl=max_ttl)
    else:
        with pytest.raises(BadSignature, match="expired|longer"):
            verify_params(s, KEY, now, max_ttl=max_ttl)


def test_empty_key_cannot_sign():
    with pytest.raises(ValueError):
        sign_params(PARAMS, b"", NOW)


def _link_params(out: str) -> tuple[str, dict[str, str]]:
    url = urlsplit(out.strip())
    return url.scheme + "://" + url.netloc + url.path, {
        k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()
    }


def test_sign_link_command_with_key_env(monkeypatch, capsys):
    monkeypatch.setenv("LMS_KEY", "s3cret-key-for-tests")
    before = int(time.time())
    rc = cli.main(
        [
            "sign-link",
            "--key-env",
            "LMS_KEY",
            "--course",
            "uai_source-uai.intro",
            "--notebook",
            "lectures/lecture1/mod5 lec1.ipynb",
            "--size",
            "small",
            "--ttl",
            "3600",
            "--base-url",
            "https://hub.example.edu/",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    base, params = _link_params(out)
    assert base == "https://hub.example.edu/tmplogin"
    assert params["course"] == "uai_source-uai.intro"
    assert params["notebook"] == "lectures/lecture1/mod5 lec1.ipynb"
    assert before + 3600 <= int(params["exp"]) <= int(time.time()) + 3600
    verify_params(params, "s3cret-key-for-tests", time.time(), max_ttl=3600)
    assert out.index("course=") < out.index("exp=") < out.index("sig=")


def test_sign_link_command_relative_link_with_key(capsys):
    assert cli.main(["sign-link", "--key", "abc", "--course", "c1", "--ttl", "60"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("/tmplogin?course=c1&exp=")
    verify_params(_link_params("http://h" + out)[1], "abc", time.time())


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--key-env", "MISSING_VAR", "--course", "c", "--ttl", "60"], {}),
        (["--key", "", "--course", "c", "--ttl", "60"], {}),
        (["--key", "k", "--course", "c", "--ttl", "0"], {}),
        (["--key", "k", "--course", "c"], {}),  # ttl required
        (["--course", "c", "--ttl", "60"], {}),  # key required
        (["--key", "k", "--key-env", "V", "--course", "c", "--ttl", "60"], {"V": "k"}),
    ],
)
def test_sign_link_command_refuses_bad_arguments(argv, env, monkeypatch, capsys):
    monkeypatch.delenv("MISSING_VAR", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as info:
        cli.main(["sign-link", *argv])
    assert info.value.code == 2
    assert capsys.readouterr().out == ""


TICKET_OPTIONS = {"course": "uai-intro:2026.1", "notebook": "a b/c.ipynb", "size": "small"}


@pytest.mark.parametrize(
    "user, options, change",
    [
        ("u1", {**TICKET_OPTIONS, "course": "data-science:2026.2"}, "another course"),
        ("u1", {**TICKET_OPTIONS, "size": "large"}, "another size"),
        ("u1", {k: v for k, v in TICKET_OPTIONS.items() if k != "notebook"}, "no notebook"),
        ("u2", TICKET_OPTIONS, "another user"),
    ],
)
def test_launch_ticket_binds_user_and_options(user, options, change):
    ticket = launch_ticket("key", "u1", TICKET_OPTIONS)
    verify_ticket("key", "u1", {**TICKET_OPTIONS, "ticket": ticket}, ticket)  # the ticket key
    with pytest.raises(BadSignature):
        verify_ticket("key", user, options, ticket)
    with pytest.raises(BadSignature):
        verify_ticket("other key", "u1", TICKET_OPTIONS, ticket)


@pytest.mark.parametrize("ticket", ["", "x" * 43, "é" * 43, None])
def test_launch_ticket_refuses_made_up_tickets(ticket):
    with pytest.raises(BadSignature):
        verify_ticket("key", "u1", TICKET_OPTIONS, ticket)
