"""``CNBiSpawner``: KubeSpawner whose image, landing notebook and size come from the launch.

A thin wiring of ``selection.plan_launch`` into KubeSpawner's hooks; the decisions live in
``selection.py`` and ``images/``. What happens, in JupyterHub 6 terms:

- ``GET /hub/spawn?course=…&notebook=…&size=…``: the hub passes the query (minus ``next``
  and ``display_name``; ``opt-`` prefixes stripped) to ``options_from_query``, which plans
  the launch and returns the canonical ``plan.user_options()`` (``course`` = the image's
  exact registry key). A refusal is a ``tornado.web.HTTPError`` whose ``jupyterhub_message``
  the hub shows on the spawn page with our status code (4xx/503); nothing is started.
- ``POST /hub/spawn`` (the form below) goes through ``options_from_form`` the same way.
- ``POST /hub/api/users/{name}/server[/{server}]`` stores the JSON body as ``user_options``
  unchecked; every start therefore re-plans in ``load_user_options`` (KubeSpawner calls it
  first thing in ``start()``, before any Kubernetes object exists). A body with unknown keys,
  or an ``image`` that is not a registry name, fails the spawn with our status and message.
  Once planned, the stored options are replaced by the canonical ones (exact image key).
- Restarts reuse the stored canonical options; re-planning looks the exact key up with
  ``reg.get`` first, so a server keeps an image that has since been marked outdated, and an
  image removed from the registry fails cleanly (404, "no course image with that name").
- The plan is applied by setting KubeSpawner traits (``image``, ``default_url``, cpu/mem,
  ``extra_resource_*``, ``node_selector``, ``tolerations``, ``node_affinity_required``,
  ``extra_labels``/``extra_annotations``) on top of the configured values; KubeSpawner
  builds the pod. ``profile_list`` is not used by this spawner.
- Failed launches are explained: ``start`` is watched by ``launch_guard.guard_start``
  (plain-language reason, author hint, the pod's last events and log lines on the hub's
  pages; ``c.LaunchDiagnostics.*``), and progress events are reworded for learners.

Migrating an MIT-style hub: ``c.CNBiSpawner.known_images = KNOWN_IMAGES`` (a dict
``{course: image_ref}``) is the one-line equivalent of ``c.ImageRegistry.static_images =
KNOWN_IMAGES`` plus ``c.ImageRegistry.watch_imagestreams = False`` (unless that is set
explicitly): courses resolve case-insensitively from the dict, nothing else can launch.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Mapping, Sequence
from typing import Any

from kubespawner import KubeSpawner
from sqlalchemy.orm import object_session
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Dict, List, TraitError, Union, default

from .anonymous import GuestPolicy
from .auth import TmpLoginMixin
from .errors import LaunchError, RegistryNotReady
from .hub_errors import LaunchRefused, UserFacingError
from .images.model import KnownImage
from .images.registry import ImageRegistry
from .lab_settings import LabSettings, with_lab_settings
from .launch_failures import progress_message
from .launch_grammar import COURSE, TICKET, flatten
from .launch_guard import LaunchDiagnostics, guard_start
from .learner_lab import LearnerLab, with_named
from .moved_settings import FROM_LEARNER_LAB, FROM_SPAWNER, refuse_moved
from .selection import RESOURCE_FIELDS, LaunchPlan, ResourcePackage, launch_summary, plan_launch
from .signing import verify_ticket
from .sizes import ResourcePolicy

# KubeSpawner traits a plan sets; their configured values are the base each plan adds to.
_PLAN_TRAITS = (*RESOURCE_FIELDS, "extra_labels", "extra_annotations")


def _format_escape(value: str) -> str:
    """KubeSpawner runs extra_labels/annotations through ``str.format``: keep braces literal."""
    return value.replace("{", "{{").replace("}", "}}")


def options_form_html(
    images: Sequence[KnownImage],
    sizes: Sequence[ResourcePackage],
    *,
    selected_course: str | None = None,
    selected_size: str | None = None,
    notebook: str | None = None,
    ready: bool = True,
) -> str:
    """The spawn form's inner HTML (the hub adds ``<form>`` and the Start button).

    Every value is HTML-escaped: display names and descriptions come from ImageStream
    annotations that course authors control. Never empty (an empty form makes the hub
    fall back to spawning with default options after a bad query).
    """
    e = html.escape
    if not ready:
        return (
            '<p class="cnbi-form-wait">The hub is still loading its course images. '
            "Please reload this page in a few seconds.</p>"
        )
    if not images:
        return '<p class="cnbi-form-empty">No course images are available right now.</p>'
    keys = [image.key for image in images]
    chosen = selected_course if selected_course in keys else keys[0]
    parts = ['<fieldset class="cnbi-courses"><legend>Course</legend>']
    for n, image in enumerate(images):
        checked = " checked" if image.key == chosen else ""
        parts.append(
            '<div class="form-check">'
            f'<input class="form-check-input" type="radio" name="course" id="cnbi-course-{n}"'
            f' value="{e(image.key)}"{checked} required>'
            f'<label class="form-check-label" for="cnbi-course-{n}">'
            f"<strong>{e(image.display_name or image.key)}</strong>"
            + (f' <span class="text-muted">({e(image.key)})</span>' if image.display_name else "")
            + (f"<br><small>{e(image.description)}</small>" if image.description else "")
            + "</label></div>"
        )
    parts.append("</fieldset>")
    if sizes:
        names = [s.name for s in sizes]
        size_chosen = selected_size if selected_size in names else None
        parts.append(
            '<label class="form-label" for="cnbi-size">Size</label>'
            '<select class="form-select" name="size" id="cnbi-size">'
            + ('<option value="">Course default</option>' if size_chosen is None else "")
        )
        for size in sizes:
            selected = " selected" if size.name == size_chosen else ""
            text = size.label + (f" ({size.description})" if size.description else "")
            parts.append(f'<option value="{e(size.name)}"{selected}>{e(text)}</option>')
        parts.append("</select>")
    parts.append(
        '<label class="form-label" for="cnbi-notebook">Notebook to open (optional)</label>'
        '<input class="form-control" type="text" name="notebook" id="cnbi-notebook"'
        ' maxlength="1024" placeholder="e.g. lectures/lecture1.ipynb"'
        + (f' value="{e(notebook)}"' if notebook else "")
        + ">"
    )
    return "\n".join(parts)


def _applied_in_load_user_options(spawner: Any, user_options: dict) -> None:
    """JupyterHub >= 5.3's hook: a no-op, so the hub does not log our options as "unhandled".

    They are validated and applied in ``load_user_options``, which KubeSpawner calls at the
    start of every ``start()`` on every JupyterHub version we support.
    """


def _ticket(options: Mapping[str, Any]) -> str:
    """The launch ticket among ``options`` ("" if none); ``plan_launch`` checked its shape."""
    return flatten(options[TICKET]) if TICKET in options else ""


class CNBiSpawner(KubeSpawner):
    """KubeSpawner launching only registry images, chosen by ``course``/``notebook``/``size``."""

    known_images = Union(
        [Dict(), List()],
        default_value=None,
        allow_none=True,
        help="""
        MIT-style fallback: a static KNOWN_IMAGES dict {course: image_ref} (or a list of
        image dicts, see cnbi_spawner.images.static). Setting it is the same as
        `c.ImageRegistry.static_images = KNOWN_IMAGES` plus
        `c.ImageRegistry.watch_imagestreams = False` (unless watch_imagestreams is set
        explicitly), so an MIT OL QueryStringKubeSpawner config migrates in one line.
        """,
    ).tag(config=True)

    image_registry = AnyTrait(
        None,
        allow_none=True,
        help="The ImageRegistry to use (default: the hub's, ImageRegistry.for_hub(config)).",
    )

    resource_policy = AnyTrait(
        None,
        allow_none=True,
        help="The ResourcePolicy to use (default: ResourcePolicy(parent=spawner)).",
    )

    user_options: dict[str, Any]  # KubeSpawner's trait (the hub's stored launch options)
    _cnbi_base: dict[str, Any] | None = None
    _cnbi_pod_base: dict[str, list] | None = None
    _cnbi_plan: LaunchPlan | None = None

    @default("options_form")
    def _cnbi_options_form_default(self):
        return type(self)._cnbi_render_form

    @default("options_from_form")
    def _cnbi_options_from_form_default(self):
        return self._cnbi_options_from_form

    @default("apply_user_options")
    def _cnbi_apply_user_options_default(self):
        return _applied_in_load_user_options

    # -- collaborators -------------------------------------------------------------------
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        refuse_moved(self.config, ["CNBiSpawner"], FROM_SPAWNER)
        refuse_moved(self.config, ["LearnerLab"], FROM_LEARNER_LAB)
        self._cnbi_guests = GuestPolicy(parent=self)

    def _registry(self) -> ImageRegistry:
        if self.image_registry is None:  # the hub's (its authenticator built it at start)
            self.image_registry = ImageRegistry.for_hub(self.config, self.log)
        return self.image_registry

    async def _ready_registry(self, timeout: float | None = None) -> ImageRegistry:
        reg = self._registry()
        try:
            await reg.ready(timeout)
        except Exception:
            self.log.exception("Image registry could not start")
            raise LaunchRefused(RegistryNotReady()) from None
        return reg

    def _policy(self):
        try:
            if self.resource_policy is None:
                self.resource_policy = ResourcePolicy(parent=self)
            return self.resource_policy.launch_policy()
        except TraitError as e:  # an operator's mistake: loud in the log, plain for the learner
            self.log.error("Invalid resource configuration: %s", e)
            raise UserFacingError(
                500,
                "The hub's resource settings are invalid; please tell its operator.",
                "invalid ResourcePolicy configuration",
            ) from None

    def _anonymous(self) -> bool:
        """Is this server's user a guest (``c.GuestPolicy``, as the authenticator reads it)?"""
        return self._cnbi_guests.is_guest(self.user.name, [g.name for g in self.user.groups])

    async def _plan(self, options: Mapping[str, Any], *, restart: bool) -> LaunchPlan:
        """``plan_launch`` with this user's registry and policy; refusals as HTTPError."""
        try:
            reg = await self._ready_registry()
            plan = plan_launch(
                options,
                reg,
                self._policy(),
                anonymous=self._anonymous(),
                allow_outdated=restart,
            )
            self._check_ticket(plan, options)
            return plan
        except LaunchError as e:
            self.log.warning(
                "Launch refused for %s: %s %s: %s",
                self._log_name,
                e.status,
                type(e).__name__,
                e.message,
            )
            raise LaunchRefused(e) from None

    def _ticket_key(self, plan: LaunchPlan) -> bytes:
        """The link signing key when this launch needs a ticket (a guest on a hub whose
        tmplogin mints tickets, i.e. with a signing key), else ``b""``."""
        if not plan.anonymous or not isinstance(self.authenticator, TmpLoginMixin):
            return b""
        return self.authenticator.signing_key

    def _check_ticket(self, plan: LaunchPlan, options: Mapping[str, Any]) -> None:
        """On a hub with signed links, a guest starts only the launch its link planned.

        ``/tmplogin`` adds a ticket binding the new anonymous user to the checked options
        (``signing.launch_ticket``); without it a signed-in learner could swap the course
        through ``/hub/spawn``, the form or the REST API. Named users need no ticket.
        """
        key = self._ticket_key(plan)
        if key:
            verify_ticket(key, self.user.name, plan.user_options(), _ticket(options))

    def _canonical(self, plan: LaunchPlan, options: Mapping[str, Any]) -> dict[str, str]:
        """The options the hub stores: the plan's, plus the checked ticket (restarts keep it)."""
        canonical = plan.user_options()
        if self._ticket_key(plan):
            canonical[TICKET] = _ticket(options)
        return canonical

    # -- hub hooks -----------------------------------------------------------------------
    async def options_from_query(self, query_data: Mapping[str, Any]) -> dict[str, str]:
        """``/hub/spawn?course=…``: validate and return the canonical options."""
        return self._canonical(await self._plan(query_data, restart=False), query_data)

    async def _cnbi_options_from_form(self, form_data: Mapping[str, Any]) -> dict[str, str]:
        """The spawn form: same rules as the query."""
        return self._canonical(await self._plan(form_data, restart=False), form_data)

    async def _cnbi_render_form(self) -> str:
        try:
            reg = await self._ready_registry(min(self._registry().first_sync_timeout, 2.0))
        except web.HTTPError:
            return options_form_html([], [], ready=False)
        if not reg.synced:
            return options_form_html([], [], ready=False)
        policy = self._policy()
        anonymous = self._anonymous()
        sizes = [p for p in policy.packages.values() if policy.allowed_for(p, anonymous=anonymous)]
        previous = self.user_options if isinstance(self.user_options, dict) else {}
        text = {k: v for k, v in previous.items() if isinstance(v, str)}
        return options_form_html(
            reg.launchable(),
            sizes,
            selected_course=text.get("course"),
            selected_size=text.get("size"),
            notebook=text.get("notebook"),
        )

    async def load_user_options(self) -> None:
        """Re-plan from ``user_options`` at every start and apply the plan (see module doc)."""
        plan = await self._plan(self.user_options or {}, restart=True)
        self._apply_plan(plan)
        canonical = self._canonical(plan, self.user_options or {})
        if self.user_options != canonical:
            # e.g. {"course": "uai-intro"} from the REST API: store the exact key, so the
            # next restart of this server gets this image, not whatever the name means then
            self.user_options = canonical
            if self.orm_spawner is not None:
                self.orm_spawner.user_options = canonical
                # commit now: any hub request finishing meanwhile rolls back dirty objects
                session = object_session(self.orm_spawner)
                if session is not None:
                    session.commit()
        self.log.info(
            "Launch plan for %s: course=%s image=%s size=%s url=%s anonymous=%s",
            self._log_name,
            plan.image.key,
            plan.image.image,
            plan.size.name,
            plan.default_url,
            plan.anonymous,
        )

    def _apply_plan(self, plan: LaunchPlan) -> None:
        if self._cnbi_base is None:  # configured values, before any plan touched them
            self._cnbi_base = {name: getattr(self, name) for name in _PLAN_TRAITS}
        base = self._cnbi_base
        size = plan.size
        self.image = plan.image.image
        self.default_url = plan.default_url
        for name in ("cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit"):
            value = getattr(size, name)
            setattr(self, name, base[name] if value is None else value)
        for name in ("extra_resource_guarantees", "extra_resource_limits", "node_selector"):
            setattr(self, name, {**base[name], **getattr(size, name)})
        for name in ("tolerations", "node_affinity_required"):
            # KubeSpawner's own dict-or-list reading of these traits (private API, pinned)
            configured = self._sorted_dict_values(base[name]) or []
            setattr(self, name, [*configured, *(dict(t) for t in getattr(size, name))])
        self.extra_labels = {**base["extra_labels"], **plan.labels}
        self.extra_annotations = {
            **base["extra_annotations"],
            **{k: _format_escape(v) for k, v in plan.annotations.items()},
        }
        self._cnbi_plan = plan

    def _launch_image(self) -> KnownImage | None:
        """The course image of this launch: the plan's, else the stored options' course."""
        plan = self._cnbi_plan
        if plan is not None:
            return plan.image
        course = (self.user_options or {}).get(COURSE)
        if isinstance(course, str) and self.image_registry is not None:
            return self.image_registry.get(course)
        return None

    def launch_summary(self) -> dict[str, str] | None:
        """``{"course": display name, "notebook": path or ""}`` of this launch, for the
        guest's progress page (:mod:`cnbi_spawner.guest_pages`); ``None`` when unknown."""
        plan = self._cnbi_plan
        if plan is not None:
            return plan.summary()
        image = self._launch_image()
        return None if image is None else launch_summary(image, None)

    def _starting_message(self) -> str | None:
        image = self._launch_image()
        if image is None:
            return None
        name = image.display_name or image.key
        return f"Starting course image {name} ({image.key})"

    async def progress(self):
        """A first message naming the course image, then KubeSpawner's pod events."""
        message = self._starting_message()
        if message:
            yield {"progress": 5, "message": message}
        async for event in super().progress():
            plain = progress_message(event.get("raw_event") or {})
            if plain:  # plain language for the learner; Kubernetes' text stays in raw_event
                event = {**event, "message": plain}
            yield event

    async def _start_reflector(self, *args: Any, **kwargs: Any):
        """KubeSpawner's shared reflector start, shielded from any one spawn's cancellation.

        Every spawn awaits the same shared reflector start (its ``first_load_future``) with a
        plain ``await`` (KubeSpawner 7.1). Cancelling one spawn (the hub's start timeout, or
        our launch guard) while the Kubernetes API hangs therefore cancels that shared future,
        and every other spawn waiting on it ends in ``CancelledError``, which JupyterHub's
        ``User.spawn`` does not treat as a failure: the server stays "ready" with no pod and
        no route ("ghost server", learner sees "500: Redirect loop"). Shielded, only the
        cancelled spawn stops waiting; the others fail or succeed on their own.

        Upstream: ``KubeSpawner._start_reflector`` in kubespawner/spawner.py (7.1.0:
        ``await previous_reflector.first_load_future`` for a reflector another spawn started,
        ``await current_reflector.first_load_future`` for a new one); every call site starts
        the reflectors since jupyterhub/kubespawner#678 (multi-namespace watching), and the
        future's failure handling is jupyterhub/kubespawner#635. On the hub side, a cancelled
        spawn future that is not reported as a failure is jupyterhub/jupyterhub#5089 (fix
        proposed in jupyterhub/jupyterhub#5091). Private API: pyproject.toml pins the
        KubeSpawner versions this was tested with.
        """
        return await asyncio.shield(super()._start_reflector(*args, **kwargs))

    @property
    def events(self) -> list[dict]:
        """KubeSpawner's ``events``, the same list at a fraction of the cost.

        KubeSpawner 7.1 sorts *every* event of the namespace (its event reflector's
        ``events``), then keeps this pod's: O(E log E) per call, and the progress stream of
        every starting learner and our launch guard each call it once a second. In the
        1000-learner storm without a pool that was 16 % of the hub's busy time (py-spy,
        ``benchmarks/README.md``, bottleneck 6).
        Here this pod's events are picked first (O(E), cheap comparisons), then the few are
        sorted with the same key; a stable sort of the same items gives the same order. The
        ``_last_event`` rule (only events after the marker KubeSpawner's ``start`` sets) is
        KubeSpawner's. Upstream: ``KubeSpawner.events`` and ``EventReflector.events`` in
        kubespawner/spawner.py (7.1.0); pyproject.toml pins the tested versions.
        """
        reflector = self.event_reflector
        if not reflector:
            return []
        name = self.pod_name
        mine = [e for e in reflector.resources.values() if e["involvedObject"]["name"] == name]
        mine.sort(key=lambda event: event["lastTimestamp"] or event["eventTime"])
        events: list[dict] = []
        for event in mine:
            if self._last_event and event["metadata"]["uid"] == self._last_event:
                events = []  # the marker: only events after it count
            else:
                events.append(event)
        return events

    def get_env(self) -> dict[str, str]:
        """KubeSpawner's environment plus the learner-lab extension's (``learner_lab``)."""
        return {**super().get_env(), **LearnerLab(parent=self).environment()}

    def _add_learner_lab(self) -> None:
        """The learner-lab init container, volume and mount (``c.LearnerLab.init_image``) on
        top of the configured ``init_containers``/``volumes``/``volume_mounts``."""
        if self._cnbi_pod_base is None:  # configured values, before we added ours
            self._cnbi_pod_base = {
                name: list(self._sorted_dict_values(getattr(self, name)))
                for name in ("init_containers", "volumes", "volume_mounts")
            }
        base = self._cnbi_pod_base
        parts = LearnerLab(parent=self).pod_parts()
        if parts is None:
            for name, configured in base.items():
                setattr(self, name, list(configured))
            return
        self.init_containers = with_named(base["init_containers"], parts.init_container)
        self.volumes = with_named(base["volumes"], parts.volume)
        self.volume_mounts = with_named(base["volume_mounts"], parts.volume_mount)

    def start(self):
        """KubeSpawner's start, with the learner's JupyterLab defaults (``lab_settings``),
        watched so a failed launch says why (``launch_guard``)."""
        hooks = with_lab_settings(self.lifecycle_hooks, LabSettings(parent=self).user_settings)
        if hooks is None:
            self.log.warning(
                "LabSettings.user_settings not written for %s: lifecycle_hooks has a postStart",
                self._log_name,
            )
        else:
            self.lifecycle_hooks = hooks
        self._add_learner_lab()
        future = super().start()
        settings = LaunchDiagnostics(parent=self)
        if not settings.enabled:
            return future
        self._start_future = asyncio.ensure_future(guard_start(self, future, settings))
        return self._start_future
