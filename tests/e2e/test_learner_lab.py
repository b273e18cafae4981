"""What a guest sees around and inside JupyterLab, in a real browser (Debian Chromium).

One stack for the module (process runtime: real ``jupyterhub-singleuser`` pods serving the
demo courses, the production ``jupyterhub_config.py`` with ``CNBI_LEARNER_LAB_IMAGE`` set,
so the extension reaches each pod through the spawner's init container and emptyDir, as on
a real cluster): the guest's progress page names the course and notebook and shows none of
the hub's machinery (user name, Token, Stop Server), while a named user keeps the stock
navigation bar; a course image without the extension gets it and shows the notice.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_stack import AUTHOR, AUTHOR_PASSWORD, SCREENS, start_stack, wait_for
from harness import BIN, browser_login

from cnbi_devcluster.demo import demo_image_map
from cnbi_spawner.learner_lab import BUILT as BUILT_MANIFEST
from cnbi_spawner.learner_lab import FILES

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

DATA_SCIENCE = "registry.example/courses/data-science"
LAB_TIMEOUT = 150_000
#: the culler's settings the notice must show (the culler itself never runs a pass here)
CULLER_ENV = {
    "CNBI_CULL_EVERY": "3600",
    "CNBI_ANONYMOUS_IDLE_TIMEOUT": "600",
    "CNBI_ANONYMOUS_MAX_AGE": str(6 * 3600),
}
#: any image reference "pulls" in the dev cluster; its init container runs this venv's
#: `cnbi-hub learner-lab`, as the hub image's would on a real cluster
LAB_IMAGE = "registry.example/jupyterhub/cnbi-hub:e2e"
MOUNT = "/opt/cnbi-learner-lab"
#: the learner-lab entries among the extensions the JupyterLab page loads
FEDERATED = """() => JSON.parse(document.getElementById('jupyter-config-data').textContent)
    .federated_extensions.filter(e => e.name === 'cnbi-learner-lab')"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    env = {**CULLER_ENV, "CNBI_LEARNER_LAB_IMAGE": LAB_IMAGE}
    s = await start_stack(tmp_path_factory.mktemp("e2e-learner"), env=env)
    try:
        yield s
    finally:
        await s.stop()


@contextlib.asynccontextmanager
async def _faulty_launch(stack, page, fault: str):
    """A guest's launch of the data-science course whose pod has ``fault``; yields the
    guest's user name once the browser is on the progress page; then cleans up."""
    stack.cluster.kubelet.pod_faults.set(DATA_SCIENCE, fault)
    user = None
    try:
        await page.goto(
            stack.url + "/tmplogin?course=data-science&notebook=analysis%2Fexplore.ipynb"
        )
        await page.wait_for_url("**/hub/spawn-pending/**")
        user = page.url.split("/spawn-pending/", 1)[1].split("?", 1)[0]
        yield user
    finally:
        stack.cluster.kubelet.pod_faults.set(DATA_SCIENCE, None)
        if user:
            await stack.api("DELETE", f"/users/{user}/server")


async def test_guest_progress_page_names_the_launch_and_hides_the_machinery(stack, page):
    """A pod that cannot be scheduled keeps the guest on the progress page: it names the
    course and notebook, and has no UUID, Token link, Logout or visible Stop Server."""
    async with _faulty_launch(stack, page, "Unschedulable") as user:
        launch = page.locator("#cnbi-launch")
        await launch.wait_for()
        text = await launch.inner_text()
        assert "Data science" in text and "analysis/explore.ipynb" in text, text
        nav = await page.locator("nav").inner_text()
        assert user not in nav and "Token" not in nav and "Logout" not in nav, nav
        assert "Temporary guest session" in nav
        assert await page.locator("#stop-server-btn").is_hidden()
        assert user not in await page.locator("body").inner_text()
        SCREENS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENS / "guest-progress.png"))


async def test_guest_failed_launch_page_names_the_course(stack, page):
    """After a failed launch, the page a guest gets back to (reload, or the link again while
    the failed server is remembered) names the course and notebook, not "your server"."""
    async with _faulty_launch(stack, page, "CrashLoopBackOff") as user:
        await page.locator(".cnbi-launch-failure").first.wait_for(timeout=LAB_TIMEOUT)
        await page.reload()
        box = page.locator("#cnbi-not-running")
        await box.wait_for()
        text = await box.inner_text()
        assert "Data science could not start" in text, text
        assert "analysis/explore.ipynb" in text and "has failed" in text, text
        assert "Server" not in text and user not in await page.locator("body").inner_text()
        assert (await page.locator("#start").inner_text()).strip() == "Try again"
        SCREENS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENS / "guest-launch-failed.png"))


async def test_named_user_keeps_the_stock_navigation_bar(stack, page):
    await browser_login(page, stack.url, AUTHOR, AUTHOR_PASSWORD)
    await page.goto(stack.url + "/hub/token")
    nav = page.locator("nav")
    await wait_for(lambda: _has(nav, AUTHOR), "the author's name in the navigation bar")
    text = await nav.inner_text()
    assert "Token" in text and "Logout" in text and "Temporary guest session" not in text


async def _has(locator, text: str) -> bool:
    return text in await locator.inner_text()


PUT_FILE = """async ([path, content]) => {
  const xsrf = document.cookie.match(/_xsrf=([^;]+)/)[1];
  const base = document.querySelector('#jupyter-config-data')
    ? JSON.parse(document.querySelector('#jupyter-config-data').textContent).baseUrl : '/';
  const r = await fetch(base + 'api/contents/' + path, {
    method: 'PUT',
    headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'},
    body: JSON.stringify({type: 'file', format: 'text', content}),
  });
  return r.status;
}"""


async def test_notice_shows_the_culler_times_and_download_has_exactly_the_new_work(stack, page):
    await page.goto(stack.url + "/tmplogin?course=python-basics&notebook=intro%2F01-hello.ipynb")
    await page.wait_for_url(re.compile(r"/user/[0-9a-f-]{36}/lab"), timeout=LAB_TIMEOUT)
    notice = page.locator("#cnbi-notice")
    await notice.wait_for(timeout=LAB_TIMEOUT)
    text = await page.locator("#cnbi-notice-text").inner_text()
    session = await page.evaluate(
        """async () => (await fetch(location.pathname.split('/lab')[0] +
        '/cnbi-learner/session', {headers: {'X-XSRFToken':
        document.cookie.match(/_xsrf=([^;]+)/)[1]}})).json()"""
    )
    assert "temporary" in session, session
    assert session["temporary"] and session["idle_timeout"] == 600
    assert session["max_age"] == 6 * 3600
    end = await page.evaluate(
        """s => new Date(Date.parse(s) + 6 * 3600 * 1000)
        .toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'})""",
        session["started"],
    )
    assert "after 10 minutes without activity" in text, text
    assert f"at the latest at {end} (6 hours after it started)" in text, text
    SCREENS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENS / "learner-notice.png"))

    # one new file, one changed course file; everything else is the image's, unchanged
    assert await page.evaluate(PUT_FILE, ["mine.txt", "my own notes"]) == 201
    assert await page.evaluate(PUT_FILE, ["intro/02-lists.ipynb", "changed"]) == 200
    async with page.expect_download() as info:
        await page.locator("#cnbi-download").click()
    download = await info.value
    data = open(await download.path(), "rb").read()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        assert archive.read("mine.txt") == b"my own notes"
    assert names == ["intro/02-lists.ipynb", "mine.txt"], names

    await page.locator("#cnbi-notice-dismiss").click()
    assert await notice.count() == 0
    await page.reload()
    await page.wait_for_selector(".jp-LabShell", timeout=LAB_TIMEOUT)
    await page.wait_for_timeout(3000)
    assert await notice.count() == 0  # dismissed for this tab


def _course_image_extensions(home: Path) -> str:
    """``jupyter labextension list`` as the course image's own server sees it (every dev
    cluster course runs this venv's JupyterLab), without anything the spawner adds."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [str(BIN / "jupyter"), "labextension", "list"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


async def test_course_image_without_the_extension_gets_it_through_the_spawner(
    stack, page, tmp_path
):
    listing = _course_image_extensions(tmp_path)
    assert "@jupyterlab" in listing or "jupyterlab" in listing, listing  # the listing works
    assert "cnbi-learner-lab" not in listing, listing  # the image lacks it
    assert not Path(MOUNT).exists()  # nothing on this machine at the pod's mount path

    await page.goto(stack.url + "/tmplogin?course=python-basics&notebook=intro%2F01-hello.ipynb")
    await page.wait_for_url(re.compile(r"/user/[0-9a-f-]{36}/lab"), timeout=LAB_TIMEOUT)
    user = re.search(r"/user/([0-9a-f-]{36})/", page.url).group(1)
    await page.locator("#cnbi-notice").wait_for(timeout=LAB_TIMEOUT)

    (pod,) = [
        p
        for p in stack.pods()
        if p["metadata"]["annotations"].get("hub.jupyter.org/username") == user
    ]
    spec = pod["spec"]
    (init,) = spec["initContainers"]
    assert (init["image"], init["command"]) == (LAB_IMAGE, ["cnbi-hub", "learner-lab", MOUNT])
    assert set(init["resources"]["limits"]) == {"cpu", "memory"}  # a ResourceQuota admits it
    (volume,) = [v for v in spec["volumes"] if v["name"] == init["volumeMounts"][0]["name"]]
    assert "emptyDir" in volume and not any("hostPath" in v for v in spec["volumes"])
    (notebook,) = spec["containers"]
    assert {"name": volume["name"], "mountPath": MOUNT, "readOnly": True} in notebook[
        "volumeMounts"
    ]
    env = {e["name"]: e.get("value") for e in notebook["env"]}
    assert env["JUPYTER_PATH"] == f"{MOUNT}/data"
    assert env["JUPYTER_CONFIG_PATH"] == f"{MOUNT}/config"
    (status,) = pod["status"]["initContainerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
    # the frontend loaded it once (one federated extension of the name)
    assert len(await page.evaluate(FEDERATED)) == 1


async def test_a_course_image_that_already_has_the_extension_loads_it_once(stack, page, tmp_path):
    """An image with its own (older) copy installed, here in the image's home
    (``~/.local/share/jupyter``, after ``JUPYTER_PATH`` in Jupyter's search path, like an
    image's ``sys.prefix/share/jupyter``): JupyterLab loads the delivered copy, once."""
    (repo,) = [r for r, folder in demo_image_map().items() if folder.name == "python-basics"]
    content = tmp_path / "python-basics-with-lab-extension"
    shutil.copytree(demo_image_map()[repo], content)
    installed = content / ".local/share/jupyter/labextensions/cnbi-learner-lab"
    shutil.copytree(FILES / "data/labextensions/cnbi-learner-lab", installed)
    manifest = json.loads((installed / "package.json").read_text())
    manifest["version"] = "0.0.1"  # the image's own, older build: a load path of its own
    manifest["jupyterlab"]["_build"]["load"] = "static/remoteEntry.the-images-own.js"
    (installed / "package.json").write_text(json.dumps(manifest))
    enabled = content / ".jupyter/jupyter_server_config.d/cnbi_learner_lab.json"
    enabled.parent.mkdir(parents=True)
    shutil.copy(FILES / "config/jupyter_server_config.d/cnbi_learner_lab.json", enabled)
    listing = _course_image_extensions(content)
    assert "cnbi-learner-lab v0.0.1" in listing, listing  # the image has it

    images = stack.cluster.kubelet.images
    images[repo] = content
    try:
        await page.goto(
            stack.url + "/tmplogin?course=python-basics&notebook=intro%2F01-hello.ipynb"
        )
        await page.wait_for_url(re.compile(r"/user/[0-9a-f-]{36}/lab"), timeout=LAB_TIMEOUT)
        await page.locator("#cnbi-notice").wait_for(timeout=LAB_TIMEOUT)
        loaded = await page.evaluate(FEDERATED)
        ours = json.loads((FILES / BUILT_MANIFEST).read_text())["jupyterlab"]["_build"]["load"]
        assert [e["load"] for e in loaded] == [ours], loaded  # the delivered copy, once
        await page.wait_for_timeout(3000)
        assert await page.locator("#cnbi-notice").count() == 1
    finally:
        images[repo] = demo_image_map()[repo]
