"""Logins on their way to a spawn: what ``/tmplogin`` counts that the hub cannot see yet.

Policy (pure; the clock is injected, the hub's users are passed in by name):

- **Logging in.** A name minted by ``/tmplogin`` is *logging in* from :meth:`OnItsWay.mint`
  until :meth:`OnItsWay.logged_in`. Only such a name may be authenticated (or allowed, or
  created with its group) by the handler's login. It never expires while its login is under
  way, however slow the hub is; a failed login gives it up (:meth:`OnItsWay.release`).
- **On its way.** Once logged in, the browser has been sent to ``/hub/spawn``. Until its
  spawn begins the hub counts it nowhere, so it still counts here, against
  ``max_anonymous_users`` and against the hub's ``concurrent_spawn_limit``, for as long as
  it takes, not a fixed few seconds: on a busy hub the redirect to ``/hub/spawn`` can take a
  minute, and a slot given away meanwhile is a learner who meets the hub's 429 there.
- **Settled.** It stops counting when its spawn begins (:meth:`OnItsWay.release`, from the
  authenticator's ``pre_spawn_start``: the hub counts a pending spawn from then on), when its
  user no longer exists (:meth:`OnItsWay.settle`: deleted by the culler as an abandoned
  login, or by an admin), or ``max_seconds`` after the login with neither (a browser that
  never came; the backstop when no culler runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field


@dataclass
class OnItsWay:
    """Names minted by ``/tmplogin`` whose spawn has not begun yet; see the module docstring."""

    max_seconds: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _logging_in: set[str] = field(default_factory=set)
    _logged_in: dict[str, float] = field(default_factory=dict)  # name -> monotonic login time

    def mint(self, name: str) -> None:
        self._logging_in.add(name)

    def logged_in(self, name: str) -> None:
        if name in self._logging_in:
            self._logging_in.discard(name)
            self._logged_in[name] = self.clock()

    def release(self, name: str) -> None:
        """The login failed, or the spawn began: it no longer counts here."""
        self._logging_in.discard(name)
        self._logged_in.pop(name, None)

    def is_logging_in(self, name: str) -> bool:
        return name in self._logging_in

    def settle(self, existing: Container[str]) -> int:
        """Forget logged-in names whose user is gone or that waited past ``max_seconds``;
        return how many names count now (logging in + on their way)."""
        cutoff = self.clock() - self.max_seconds
        gone = [n for n, t in self._logged_in.items() if t < cutoff or n not in existing]
        for name in gone:
            del self._logged_in[name]
        return len(self)

    def names(self) -> set[str]:
        return self._logging_in | self._logged_in.keys()

    def __len__(self) -> int:
        return len(self._logging_in) + len(self._logged_in)


def spawn_headroom(counts: dict[str, int], limit: int, starting: int) -> int | None:
    """Spawns the hub's ``concurrent_spawn_limit`` still allows (None: no limit).

    The hub counts ``spawn_pending + proxy_pending`` servers (``BaseHandler.
    spawn_single_user``); logins on their way to ``/hub/spawn`` (``starting``) will be too.
    """
    if not limit:
        return None
    return limit - counts.get("spawn_pending", 0) - counts.get("proxy_pending", 0) - starting
