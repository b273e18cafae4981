"""CustomNBImage status (either dialect) -> the phases people see (pure).

Design phases (DESIGN §4):
  build:  Pending -> Preparing -> Resolving -> Building -> Success | Failure
  import: Importing -> Validating -> Success | Failure

Rules, in order:
1. Kind: ``spec.buildType`` (ImageImport|PackageList|GitRepository) when valid, else
   seed ``spec.pipelines`` containing ``import`` (or the earlier draft's ``action: import``),
   else ``repoURL``/``repository`` -> gitrepo,
   else package-list. Import kinds use the import flow, the others the build flow.
2. Failure wins: ``status.phase`` Failed, or a condition that reports an error
   (status "True" on a type naming an error/invalid/missing thing, or status "False" on a
   ``PipelineRun*``/``*Ready``/``*Succeeded`` type). Its message is the failure message.
3. Success: ``status.phase`` Succeeded (operator) or Ready (seed).
4. In progress: seed draft phases map one to one (CreatingRepository -> Preparing; in the
   import flow every non-final phase is Importing). ``Running``/``Unknown`` (operator, or
   a draft controller between steps) is refined by the newest unfinished condition:
   ``PipelineRunPrepare`` -> Preparing, ``PipelineRunBuild`` -> Building; in the import flow a
   condition with reason ``Validating`` -> Validating. No status at all -> the first phase.
Anything malformed (wrong types, unknown phase strings) degrades to the first phase of the
flow; it never raises.

The resulting ImageStream is named by the operator's convention
``cnbi-<name>-<import|package-list|gitrepo>``; streams the dev controller writes also
carry ``cnbi.meteor.zone/source: customnbimage/<name>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cnbi_spawner.builds.resource import creator_of

BUILD_PHASES = ("Pending", "Preparing", "Resolving", "Building", "Success", "Failure")
IMPORT_PHASES = ("Importing", "Validating", "Success", "Failure")
FINAL = ("Success", "Failure")
SOURCE_ANNOTATION = "cnbi.meteor.zone/source"
STREAM_SUFFIX = {"import": "import", "package-list": "package-list", "gitrepo": "gitrepo"}
_BUILD_TYPES = {"ImageImport": "import", "PackageList": "package-list", "GitRepository": "gitrepo"}
_SEED_BUILD = {
    "Pending": "Pending",
    "Preparing": "Preparing",
    "CreatingRepository": "Preparing",
    "Resolving": "Resolving",
    "Building": "Building",
    "Importing": "Building",
}
_ERROR_WORDS = ("error", "invalid", "missing", "failed")
DEFAULT_FAILURE = "The build failed (no message from the build system)."


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }


@dataclass(frozen=True, slots=True)
class BuildStatus:
    """One CustomNBImage as people see it."""

    name: str
    kind: str  # import | package-list | gitrepo
    phase: str  # one of BUILD_PHASES / IMPORT_PHASES
    message: str = ""  # failure message (or the newest progress message)
    raw_phase: str = ""  # status.phase as written by the controller
    conditions: tuple[Condition, ...] = ()
    imagestream: str = ""

    @property
    def flow(self) -> str:
        return "import" if self.kind == "import" else "build"

    @property
    def phases(self) -> tuple[str, ...]:
        return IMPORT_PHASES if self.kind == "import" else BUILD_PHASES

    @property
    def finished(self) -> bool:
        return self.phase in FINAL

    @property
    def succeeded(self) -> bool:
        return self.phase == "Success"

    @property
    def failed(self) -> bool:
        return self.phase == "Failure"


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def build_kind(cr: dict) -> str:
    spec = _dict(cr.get("spec"))
    kind = _BUILD_TYPES.get(_str(spec.get("buildType")))
    if kind:
        return kind
    pipelines = spec.get("pipelines")
    if isinstance(pipelines, list) and "import" in pipelines:
        return "import"
    if spec.get("action") == "import":  # the design's earlier draft
        return "import"
    if spec.get("repoURL") or spec.get("repository"):
        return "gitrepo"
    return "package-list"


def imagestream_name(cr: dict) -> str:
    """Name of the ImageStream a successful run of ``cr`` produces."""
    name = _str(_dict(cr.get("metadata")).get("name"))
    return f"cnbi-{name}-{STREAM_SUFFIX[build_kind(cr)]}" if name else ""


def conditions_of(status: dict) -> tuple[Condition, ...]:
    out = []
    raw = status.get("conditions")
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict) or not _str(item.get("type")):
            continue
        out.append(
            Condition(
                type=_str(item.get("type")),
                status=_str(item.get("status")) or "Unknown",
                reason=_str(item.get("reason")),
                message=_str(item.get("message"))[:2000],
                last_transition_time=_str(item.get("lastTransitionTime")),
            )
        )
    return tuple(out)


def _is_failure(cond: Condition) -> bool:
    lowered = cond.type.lower()
    if cond.status == "True":
        return any(word in lowered for word in _ERROR_WORDS)
    if cond.status == "False":
        return (
            cond.type.startswith("PipelineRun")
            or lowered.endswith("ready")
            or lowered.endswith("succeeded")
            or cond.reason.lower() in ("failed", "error")
        )
    return False


def _in_progress_phase(kind: str, raw: str, conditions: tuple[Condition, ...]) -> str:
    unfinished = [c for c in conditions if c.status == "Unknown"]
    if kind == "import":
        if any(c.reason == "Validating" for c in unfinished):
            return "Validating"
        return "Importing"
    if raw in _SEED_BUILD:
        return _SEED_BUILD[raw]
    if raw in ("Running", "Unknown"):
        for cond in reversed(unfinished):
            if cond.type == "PipelineRunPrepare":
                return "Preparing"
            if cond.type == "PipelineRunBuild":
                return "Building"
        if any(c.type == "PipelineRunCreated" and c.status == "True" for c in conditions):
            return "Building"
        return "Building" if raw == "Running" else "Pending"
    return "Pending"


def normalise(cr: dict) -> BuildStatus:
    """Map a CustomNBImage (any dialect, possibly malformed) to a ``BuildStatus``."""
    kind = build_kind(cr)
    name = _str(_dict(cr.get("metadata")).get("name"))
    status = _dict(cr.get("status"))
    raw = _str(status.get("phase"))
    conditions = conditions_of(status)
    stream = imagestream_name(cr)
    failing = [c for c in conditions if _is_failure(c)]
    if raw == "Failed" or failing:
        message = next((c.message for c in failing if c.message), "")
        if not message:
            message = next((c.message for c in conditions if c.status == "False" and c.message), "")
        return BuildStatus(
            name, kind, "Failure", message or DEFAULT_FAILURE, raw, conditions, stream
        )
    if raw in ("Succeeded", "Ready"):
        return BuildStatus(name, kind, "Success", "", raw, conditions, stream)
    phase = _in_progress_phase(kind, raw, conditions)
    message = conditions[-1].message if conditions else ""
    return BuildStatus(name, kind, phase, message, raw, conditions, stream)


def count_in_progress(crs: Iterable[dict], creator: str) -> int:
    """How many of ``creator``'s CustomNBImages are not finished (for the quota)."""
    return sum(1 for cr in crs if creator_of(cr) == creator and not normalise(cr).finished)
