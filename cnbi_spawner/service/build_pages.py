"""Build pages of the ``cnbi`` service: the request form, the list and the live status page.

Server-rendered (Jinja, the hub's ``page.html``), usable without JavaScript: the form is
validated on the server (``builds.validate``) and re-rendered with a message per field;
``static/build.js`` only adds hints and live updates (Server-Sent Events from
``api/builds/{name}/events``). Access and XSRF rules are those of :mod:`.builds`.
"""

from __future__ import annotations

from tornado import web

from ..builds.resource import creator_of
from ..builds.validate import BuildRequestError, parse_body
from ..errors import LaunchError
from .builds import NAME_RE, BuildsHandlerBase


class _PageBase(BuildsHandlerBase):
    def render_page(self, template: str, status: int = 200, **ns) -> None:
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.finish(self.ctx.render(template, handler=self, **ns))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "message", None) or getattr(exc, "log_message", None) or ""
        try:
            self.finish(
                self.ctx.render(
                    "builds_error.html", handler=None, status_code=status_code, message=message
                )
            )
        except Exception:
            super().write_error(status_code, **kwargs)


class BuildsPageHandler(_PageBase):
    @web.authenticated
    async def get(self) -> None:
        crs = [c for c in await self.list_crs() if creator_of(c) == self.user_name]
        crs.sort(key=lambda c: (c.get("metadata") or {}).get("creationTimestamp", ""), reverse=True)
        self.render_page("builds.html", builds=[self.view(c) for c in crs])


FORM_FIELDS = (
    "kind",
    "displayName",
    "description",
    "baseImage",
    "packageVersions",
    "repoURL",
    "ref",
    "pythonVersion",
    "manifest",
)


def form_to_body(form: dict[str, str]) -> object:
    """The HTML form's flat fields -> an API body (pure; validation happens after).

    ``kind=manifest`` takes the pasted CustomNBImage (YAML or JSON, e.g. one of the CNBi
    design's samples as written) as the body, exactly as the API would.
    """
    kind = form.get("kind", "")
    if kind == "manifest":
        return parse_body(form.get("manifest", ""), "application/yaml")
    body: dict = {"displayName": form.get("displayName", "")}
    if form.get("description", "").strip():
        body["description"] = form["description"]
    if form.get("baseImage", "").strip():
        body["baseImage"] = form["baseImage"].strip()
    if kind == "import":
        body["pipelines"] = ["import"]
    elif kind in ("package-list", "gitrepo"):
        body["pipelines"] = ["prepare", "build"]
        if form.get("pythonVersion", "").strip() and not body.get("baseImage"):
            body["runtimeEnvironment"] = {"pythonVersion": form["pythonVersion"].strip()}
        if kind == "package-list":
            lines = [ln.strip() for ln in form.get("packageVersions", "").splitlines()]
            body["packageVersions"] = [ln for ln in lines if ln and not ln.startswith("#")]
        else:
            body["repoURL"] = form.get("repoURL", "").strip()
            if form.get("ref", "").strip():
                body["ref"] = form["ref"].strip()
    return body


class BuildFormHandler(_PageBase):
    @web.authenticated
    def get(self) -> None:
        self.render_page("build_new.html", form={"kind": "package-list"}, errors={}, message="")

    @web.authenticated
    async def post(self) -> None:
        form = {k: self.get_body_argument(k, "")[:70000] for k in FORM_FIELDS}
        try:
            created, _ = await self.create(form_to_body(form))
        except BuildRequestError as exc:
            errors = dict(exc.fields)
            self.render_page(
                "build_new.html", exc.status, form=form, errors=errors, message=exc.message
            )
            return
        except LaunchError as exc:
            self.render_page(
                "build_new.html", exc.status, form=form, errors={}, message=exc.message
            )
            return
        self.redirect(f"{self.ctx.prefix}builds/{created['metadata']['name']}")


class BuildPageHandler(_PageBase):
    @web.authenticated
    async def get(self, name: str) -> None:
        build = self.view(await self.get_cr(name))
        self.render_page("build_status.html", build=build)

    @web.authenticated
    async def post(self, name: str) -> None:
        """The status page's "Delete" button (form POST, XSRF-checked)."""
        self.require_creator(await self.get_cr(name))
        if self.get_body_argument("action", "") != "delete":
            raise web.HTTPError(400, "unknown action")
        await self.delete_cr(name)
        self.redirect(f"{self.ctx.prefix}builds")


def handlers(prefix: str) -> list:
    """Tornado URL specs for the build pages under ``prefix`` (ends with /)."""
    p = prefix
    return [
        (p + "builds", BuildsPageHandler),
        (p + "builds/new", BuildFormHandler),
        (p + f"builds/{NAME_RE}", BuildPageHandler),
    ]
