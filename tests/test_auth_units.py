"""The authenticator's pure parts and hooks, without a hub process.

The whole flow through a real hub, proxy and dev cluster is in ``test_auth_hub.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from jupyterhub.auth import DummyAuthenticator
from traitlets import TraitError
from traitlets.config import Config

from cnbi_spawner import tmplogin as tmplogin_mod
from cnbi_spawner.auth import TmpLoginAuthenticator, TmpLoginMixin
from cnbi_spawner.errors import (
    BadSignature,
    LaunchError,
    RegistryNotReady,
    SelectionError,
    Throttled,
    UnknownImage,
)
from cnbi_spawner.hub_errors import LaunchRefused
from cnbi_spawner.on_its_way import OnItsWay
from cnbi_spawner.signing import SIGNING_KEY_ENV
from cnbi_spawner.tmplogin import result_for, spawn_url, wants_json


@pytest.mark.parametrize(
    "error, result",
    [
        (SelectionError("bad"), "bad_request"),
        (SelectionError("guest cap", status=403), "bad_request"),
        (UnknownImage("x", ("y",)), "unknown_course"),
        (BadSignature("no"), "bad_signature"),
        (Throttled("slow down", retry_after=3), "rate_limited"),
        (Throttled("full", retry_after=60, status=503), "at_capacity"),
        (RegistryNotReady(), "not_ready"),
        (LaunchError("other"), "bad_request"),
    ],
)
def test_result_labels(error, result):
    assert result_for(error) == result
    assert result in tmplogin_mod.RESULTS


@pytest.mark.parametrize(
    "accept, expected",
    [
        ("application/json", True),
        ("application/json, */*;q=0.1", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("text/html, application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_wants_json(accept, expected):
    assert wants_json(accept) is expected


@pytest.mark.parametrize(
    "base, options, expected",
    [
        ("/hub/", None, "/hub/spawn"),
        ("/hub/", {}, "/hub/spawn"),
        ("/hub/", {"course": "c1", "size": "small"}, "/hub/spawn?opt-course=c1&opt-size=small"),
        (
            "/prefix/hub/",
            {"course": "a:b", "notebook": "dir/a b?c#d&e=f.ipynb"},
            "/prefix/hub/spawn?opt-course=a%3Ab&opt-notebook=dir%2Fa%20b%3Fc%23d%26e%3Df.ipynb",
        ),
    ],
)
def test_spawn_url_encodes_every_value(base, options, expected):
    assert spawn_url(base, options) == expected


def test_refusal_carries_status_message_and_retry_after():
    refused = LaunchRefused(Throttled("Too many.", retry_after=7))
    assert refused.status_code == 429
    assert refused.headers == {"Retry-After": "7"}
    assert refused.reason == "Too Many Requests"
    assert "7 seconds" in refused.jupyterhub_message
    assert LaunchRefused(UnknownImage("x")).headers == {}


async def test_authenticate_never_invents_a_user_from_form_data():
    a = TmpLoginAuthenticator()
    assert await a.authenticate(None, {"username": "x", "password": "y"}) is None
    assert await a.authenticate(None, None) is None
    # the handler's own marker with a name it did not reserve is refused too
    assert await a.authenticate(None, a.login_data("not-reserved")) is None
    a.reserve("0b7f0a8e-3d1c-4c58-9b9e-111111111111")
    model = await a.authenticate(None, a.login_data("0b7f0a8e-3d1c-4c58-9b9e-111111111111"))
    assert model == {"name": "0b7f0a8e-3d1c-4c58-9b9e-111111111111", "groups": ["anonymous"]}


async def test_only_minted_names_pass_check_allowed_when_allow_all_is_off():
    a = TmpLoginAuthenticator()
    assert a.allow_all is False and a.any_allow_config is True
    a.reserve("minted")
    assert await a.check_allowed("minted") is True
    assert await a.check_allowed("someone-else") is False
    a.release("minted")
    assert await a.check_allowed("minted") is False


def test_defaults_and_drop_in_login_url(monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    a = TmpLoginAuthenticator()
    assert a.auto_login is True
    assert a.login_url("/hub/") == "/hub/tmplogin"
    assert a.signing_key == b""
    assert (a.per_client_rate, a.per_client_burst, a.trusted_proxy_count) == (300.0, 300, 1)
    assert a.reuse_sessions and a.anonymous_group == "anonymous"
    assert a.max_anonymous_users == 0


def test_signing_key_from_env_or_config(monkeypatch):
    monkeypatch.setenv(SIGNING_KEY_ENV, "from-env")
    assert TmpLoginAuthenticator().signing_key == b"from-env"
    c = Config()
    c.LinkSigning.key = b"\x00\x01raw"
    assert TmpLoginAuthenticator(config=c).signing_key == b"\x00\x01raw"
    assert "from-env" not in repr(TmpLoginAuthenticator())


@pytest.mark.parametrize(
    "section, name, value, new",
    [
        ("TmpLoginAuthenticator", "link_signing_key", "k", "c.LinkSigning.key"),
        ("TmpLoginMixin", "link_max_ttl", 60, "c.LinkSigning.max_ttl"),
        ("TmpLoginMixin", "anonymous_group", "guests", "c.GuestPolicy.anonymous_group"),
        ("CourseAuthenticator", "registry_wait_timeout", 1.0, "ImageRegistry.first_sync_timeout"),
    ],
)
def test_moved_settings_stop_the_hub_with_their_new_place(section, name, value, new):
    """An old signing key left under its old name must not leave a hub with unsigned links."""
    c = Config()
    c[section][name] = value
    cls = CourseAuthenticator if section == "CourseAuthenticator" else TmpLoginAuthenticator
    with pytest.raises(TraitError) as info:
        cls(config=c)
    assert f"c.{section}.{name} is now" in str(info.value) and new in str(info.value)


def test_guests_and_link_signing_are_read_from_their_own_sections():
    c = Config()
    c.GuestPolicy.anonymous_group = "guests"
    c.LinkSigning.max_ttl = 600
    a = TmpLoginAuthenticator(config=c)
    assert (a.anonymous_group, a.link_max_ttl) == ("guests", 600)
    user = SimpleNamespace(name="teacher", groups=[SimpleNamespace(name="guests")])
    assert a.user_is_anonymous(user)
    with pytest.raises(TraitError):
        TmpLoginAuthenticator(config=Config({"LinkSigning": {"max_ttl": 0}}))


def test_rate_limiter_is_built_from_traits():
    c = Config()
    c.TmpLoginAuthenticator.per_client_rate = 60
    c.TmpLoginAuthenticator.per_client_burst = 2
    c.TmpLoginAuthenticator.global_rate = 0
    limiter = TmpLoginAuthenticator(config=c).rate_limiter
    assert [limiter.check("a").allowed for _ in range(3)] == [True, True, False]
    assert limiter.check("b").allowed


class _Group:
    def __init__(self, name):
        self.name = name


class _User:
    """The two attributes of a hub ``User`` that capacity counting reads."""

    def __init__(self, name, active, groups=()):
        self.name, self.active, self.groups = name, active, [_Group(g) for g in groups]


def test_capacity_counts_active_anonymous_users_and_fresh_logins():
    c = Config()
    c.TmpLoginAuthenticator.max_anonymous_users = 3
    c.TmpLoginAuthenticator.capacity_retry_after = 42
    a = TmpLoginAuthenticator(config=c)
    users = {
        1: _User("3f1f6f43-58a4-4e5b-9a0e-2d9d8f1c0a11", active=True),  # uuid name
        2: _User("alice", active=True),  # named: not counted
        3: _User("guest-7", active=True, groups=["anonymous"]),  # group member
        4: _User("8b0a1c2d-1111-4e5b-9a0e-2d9d8f1c0a11", active=False),  # no server
    }
    assert a.live_anonymous(users) == 2
    a.check_capacity(users)
    a.reserve("9c0a1c2d-2222-4e5b-9a0e-2d9d8f1c0a11")  # logging in, spawn not started yet
    a.reserve("3f1f6f43-58a4-4e5b-9a0e-2d9d8f1c0a11")  # already counted: not twice
    assert a.live_anonymous(users) == 3
    with pytest.raises(Throttled) as info:
        a.check_capacity(users)
    assert (info.value.status, info.value.retry_after) == (503, 42)
    # logged in, its user deleted before it reached its spawn (an abandoned login): freed
    a.logged_in("9c0a1c2d-2222-4e5b-9a0e-2d9d8f1c0a11")
    assert a.live_anonymous(users) == 2
    a.max_anonymous_users = 0  # no limit
    a.check_capacity({i: _User(f"{i:08x}-0000-4000-8000-000000000000", True) for i in range(50)})


async def test_starting_counts_logins_until_their_spawn_begins_or_their_user_is_gone():
    a = TmpLoginAuthenticator()  # no max_anonymous_users: the logins are still settled
    users = {1: _User("spawning", active=False), 2: _User("on-its-way", active=False)}
    for name in ("spawning", "on-its-way", "gone", "logging-in"):
        a.reserve(name)
    for name in ("spawning", "on-its-way", "gone"):
        a.logged_in(name)
    assert a.starting(users) == 3  # "gone" has no user any more
    await a.pre_spawn_start(users[1], None)  # the hub counts a pending spawn from here
    assert a.starting(users) == 2
    assert a.on_its_way.names() == {"on-its-way", "logging-in"}
    assert a.is_reserved("logging-in") and not a.is_reserved("on-its-way")
    assert a.capacity_headroom(users) is None


def test_on_its_way_lasts_until_the_spawn_not_a_fixed_time():
    now = [0.0]
    way = OnItsWay(max_seconds=600, clock=lambda: now[0])
    way.mint("slow-login")
    way.mint("learner")
    now[0] = 3600.0  # a login under way never expires, however slow the hub is
    assert way.settle({"learner"}) == 2 and way.is_logging_in("slow-login")
    way.logged_in("learner")
    now[0] += 599.0  # the redirect to /hub/spawn took ten minutes: still counted
    assert way.settle({"learner"}) == 2
    now[0] += 2.0  # the backstop: a browser that never came
    assert way.settle({"learner"}) == 1 and way.names() == {"slow-login"}
    way.logged_in("never-minted")  # only a minted name counts
    way.release("slow-login")
    assert len(way) == 0


class CourseAuthenticator(TmpLoginMixin, DummyAuthenticator):
    """What an operator writes to have named users and anonymous learners side by side."""


async def test_mixin_keeps_the_other_authenticator_for_named_users():
    c = Config()
    c.CourseAuthenticator.per_client_rate = 5
    c.TmpLoginMixin.max_anonymous_users = 9
    a = CourseAuthenticator(config=c)
    assert (a.per_client_rate, a.max_anonymous_users) == (5.0, 9)
    # named users: the other authenticator decides (DummyAuthenticator accepts anyone)
    assert await a.authenticate(None, {"username": "alice", "password": "pw"}) == "alice"
    assert a.login_url("/hub/") == "/hub/login"
    a.reserve("n1")
    assert await a.authenticate(None, a.login_data("n1")) == {
        "name": "n1",
        "groups": ["anonymous"],
    }


async def test_get_handlers_adds_tmplogin_and_starts_the_registry():
    from cnbi_spawner.images.registry import ImageRegistry

    ImageRegistry.forget_hub_registries()
    c = Config()
    c.ImageRegistry.watch_imagestreams = False
    c.ImageRegistry.static_images = {"Intro": "registry.example/courses/intro:1"}
    a = CourseAuthenticator(config=c)
    try:
        paths = [h[0] for h in a.get_handlers(None)]
        assert paths == ["/login", "/tmplogin", "/waiting-room"]
        registry = await a.ready_registry()
        assert registry.synced and registry.resolve("intro").key == "intro"
        assert ImageRegistry.for_hub(c) is registry  # what the hub's spawners get
    finally:
        await a.image_registry.stop()
        ImageRegistry.forget_hub_registries()


def test_get_handlers_outside_an_event_loop_still_registers():
    from cnbi_spawner.images.registry import ImageRegistry

    ImageRegistry.forget_hub_registries()
    try:
        paths = [h[0] for h in TmpLoginAuthenticator().get_handlers(None)]
        assert paths[-2:] == ["/tmplogin", "/waiting-room"]
    finally:
        ImageRegistry.forget_hub_registries()
