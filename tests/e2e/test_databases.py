"""The learner's flow with the hub's database on SQLite and on PostgreSQL 15.

PostgreSQL is Debian's (``/usr/lib/postgresql/<v>/bin``): a throw-away cluster in a temp
dir owned by ``postgres`` (run through ``runuser`` when the tests run as root), listening
on a free loopback port, fsync off; stopped and removed at teardown.

Flow (process runtime: a real singleuser server): the MIT OL link -> server ready with the
course's pinned image -> the notebook is served through the proxy; a hostile link creates
nothing; the hub restarts on the same database -> the server is still tracked and
reachable, the user keeps their options.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from e2e_stack import MITOL_LINK, free_port, start_hub_on, start_stack
from harness import BROWSER_NAVIGATION

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER_RE = re.compile(r"/(?:user|spawn-pending)/([0-9a-f-]{36})")


def pg_bin() -> Path | None:
    for version in ("15", "16", "17", "14"):
        path = Path(f"/usr/lib/postgresql/{version}/bin")
        if (path / "initdb").exists():
            return path
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@contextlib.contextmanager
def postgres_cluster():
    """Yield a SQLAlchemy URL for a fresh PostgreSQL database; everything removed after."""
    bindir = pg_bin()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries (Debian package postgresql) are not installed")
    root = Path(tempfile.mkdtemp(prefix="cnbi-e2e-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, timeout=60)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        opts = f"-k {root} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", opts, "-w",
            "-t", "60", "start")  # fmt: skip
        try:
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                "jupyterhub")  # fmt: skip
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/jupyterhub"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def db_stack(request, tmp_path):
    with contextlib.ExitStack() as stack_ctx:
        db_url = None
        if request.param == "postgresql":
            db_url = stack_ctx.enter_context(postgres_cluster())
        stack = await start_stack(tmp_path, runtime="process", db_url=db_url)
        try:
            yield stack, request.param
        finally:
            await stack.stop()


async def test_learner_flow_and_restart(db_stack):
    stack, backend = db_stack
    db_url = stack.env["CNBI_DB_URL"]
    assert db_url.startswith("postgresql+psycopg://" if backend == "postgresql" else "sqlite:")
    jar = aiohttp.CookieJar(unsafe=True)
    timeout = aiohttp.ClientTimeout(total=150)
    async with aiohttp.ClientSession(
        cookie_jar=jar, timeout=timeout, headers=BROWSER_NAVIGATION
    ) as learner:
        # a hostile link first: refused, nothing created
        async with learner.get(f"{stack.url}/tmplogin?course=registry.example/evil/x:1") as r:
            assert r.status == 404
        assert [u["name"] for u in await stack.users()] == ["author"]

        async with learner.get(stack.url + MITOL_LINK) as r:
            await r.read()
            urls = [str(h.url) for h in r.history] + [str(r.url)]
        user = next(m.group(1) for u in urls if (m := USER_RE.search(u)))
        model = await stack.wait_ready(user, 150)
        options = model["servers"][""]["user_options"]
        assert options["course"].startswith("uai-intro")
        assert options["notebook"] == "lectures/lecture1/mod5_lec1.ipynb"
        nb = f"{stack.url}/user/{user}/api/contents/lectures/lecture1/mod5_lec1.ipynb"
        async with learner.get(f"{stack.url}/user/{user}/lab") as r:
            assert r.status == 200  # through the server's OAuth with the hub
        async with learner.get(nb) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["type"] == "notebook"

        # the hub restarts on the same database: the server is tracked and reachable
        await stack.hub.stop()
        await start_hub_on(
            stack.cluster, stack.hub.workdir, hub=stack.hub, db_url=stack.env["CNBI_DB_URL"]
        )
        model = await stack.wait_ready(user, 60)
        assert model["servers"][""]["user_options"] == options
        async with learner.get(nb) as r:
            assert r.status == 200, await r.text()
        users = await stack.users()
        assert [u["name"] for u in users if "anonymous" in u["groups"]] == [user]
    # and the hub really keeps its state in that database
    assert user in db_user_names(db_url)


def db_user_names(db_url: str) -> set[str]:
    if db_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite:///"))) as db:
            return {row[0] for row in db.execute("SELECT name FROM users")}
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        return {row[0] for row in db.execute("SELECT name FROM users")}
