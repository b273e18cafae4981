"""Resource packages ("sizes") from configuration: ``c.ResourcePolicy.resource_packages``.

One configurable owns the sizes so the spawner and the authenticator read the same
config. Units are checked when the config loads, with a message that names the package
and the field, so a typo fails the hub at start-up instead of a learner's launch:

- cpu: a number of cores (``0.5``) or a Kubernetes quantity (``"500m"``);
- memory: bytes as an int, or ``"512M"``, ``"1.5G"``, ``"2Gi"`` (K/M/G/T are 1024-based,
  exactly as KubeSpawner's ``mem_limit`` reads them; Ki/Mi/Gi/Ti are the same);
- extra resources: Kubernetes quantities (``{"nvidia.com/gpu": "1"}``);
- ``node_selector`` (str -> str), ``tolerations`` and ``node_affinity_required``
  (lists of Kubernetes objects, passed to KubeSpawner untouched).

Example::

    c.ResourcePolicy.resource_packages = {
        "small": {"cpu_limit": 1, "mem_limit": "1G", "display_name": "Small"},
        "gpu": {"cpu_limit": 4, "mem_limit": "16G",
                "extra_resource_limits": {"nvidia.com/gpu": "1"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                 "effect": "NoSchedule"}]},
    }
    c.ResourcePolicy.default_size = "small"
    c.ResourcePolicy.anonymous_max_size = "small"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from traitlets import Dict, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from .launch_grammar import is_size_name
from .selection import RESOURCE_FIELDS, LaunchPolicy, ResourcePackage, parse_quantity

_MEM_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]i?)?\Z")
_MEM_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_FIELDS = {"display_name", "description", *RESOURCE_FIELDS}

DEFAULT_PACKAGES: dict[str, dict[str, Any]] = {
    "tiny": {
        "display_name": "Tiny",
        "description": "For reading and running small examples.",
        "cpu_guarantee": 0.1,
        "cpu_limit": 0.5,
        "mem_guarantee": "256M",
        "mem_limit": "512M",
    },
    "small": {
        "display_name": "Small",
        "description": "Enough for most course notebooks.",
        "cpu_guarantee": 0.25,
        "cpu_limit": 1,
        "mem_guarantee": "512M",
        "mem_limit": "1G",
    },
    "medium": {
        "display_name": "Medium",
        "description": "For heavier data work.",
        "cpu_guarantee": 0.5,
        "cpu_limit": 2,
        "mem_guarantee": "1G",
        "mem_limit": "2G",
    },
    "large": {
        "display_name": "Large",
        "description": "For training models on a CPU.",
        "cpu_guarantee": 1,
        "cpu_limit": 4,
        "mem_guarantee": "2G",
        "mem_limit": "4G",
    },
}


def parse_cpu(value: Any) -> float:
    """Cores as a float from ``0.5``/``2``/``"500m"``/``"2"``; ValueError otherwise."""
    message = f"{value!r} is not a number of CPU cores (use e.g. 0.5 or '500m')"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(message)
    if isinstance(value, str) and value.strip()[-1:].isalpha() and not value.strip().endswith("m"):
        raise ValueError(message)
    try:
        return parse_quantity(value)
    except ValueError:
        raise ValueError(message) from None


def parse_memory(value: Any) -> int:
    """Bytes as an int from ``1073741824``/``"1G"``/``"1Gi"``/``"1.5G"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount of memory")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not an amount of memory")
        return value
    if isinstance(value, float):
        raise ValueError(f"{value!r}: give memory as bytes (an int) or a string such as '1G'")
    match = _MEM_RE.match(str(value).strip())
    if not match:
        raise ValueError(
            f"{value!r} is not an amount of memory (bytes, or K/M/G/T or Ki/Mi/Gi/Ti, e.g. '1G')"
        )
    unit = (match.group(2) or "")[:1]
    return int(float(match.group(1)) * _MEM_UNITS.get(unit, 1))


_UNIT_PARSERS = {
    "cpu_guarantee": parse_cpu,
    "cpu_limit": parse_cpu,
    "mem_guarantee": parse_memory,
    "mem_limit": parse_memory,
}


def _str_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{what} must map strings to strings")
    return dict(value)


def _quantity_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must map resource names to quantities")
    out = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} has a resource name that is not a string")
        try:
            parse_quantity(amount)
        except ValueError:
            raise ValueError(
                f"{what}[{name!r}] = {amount!r} is not a Kubernetes quantity"
            ) from None
        out[name] = str(amount)
    return out


def _object_list(value: Any, what: str) -> tuple[dict, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError(f"{what} must be a list of objects")
    return tuple(dict(v) for v in value)


def build_package(name: str, spec: Mapping[str, Any]) -> ResourcePackage:
    """One ``ResourcePackage`` from its config dict; ValueError naming the bad field."""
    if not isinstance(name, str) or name != name.lower() or not is_size_name(name):
        raise ValueError(
            f"resource package name {name!r} must be lower-case letters, digits, '-', '_' "
            "or '.', at most 63 characters"
        )
    if not isinstance(spec, Mapping):
        raise ValueError(f"resource package {name!r} must be a dict")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise ValueError(
            f"resource package {name!r} has unknown field(s) {sorted(unknown)}; "
            f"known fields: {sorted(_FIELDS)}"
        )
    try:
        kwargs: dict[str, Any] = {
            "name": name,
            "display_name": str(spec.get("display_name", "")),
            "description": str(spec.get("description", "")),
        }
        for key, parser in _UNIT_PARSERS.items():
            if spec.get(key) is not None:
                try:
                    kwargs[key] = parser(spec[key])
                except ValueError as e:
                    raise ValueError(f"{key!r}: {e}") from None
        for key in ("extra_resource_guarantees", "extra_resource_limits"):
            kwargs[key] = _quantity_map(spec.get(key, {}), key)
        kwargs["node_selector"] = _str_map(spec.get("node_selector", {}), "node_selector")
        for key in ("tolerations", "node_affinity_required"):
            kwargs[key] = _object_list(spec.get(key, []), key)
    except ValueError as e:
        raise ValueError(f"resource package {name!r}: {e}") from None
    for low, high in (("cpu_guarantee", "cpu_limit"), ("mem_guarantee", "mem_limit")):
        if low in kwargs and high in kwargs and kwargs[low] > kwargs[high]:
            raise ValueError(f"resource package {name!r}: {low} is larger than {high}")
    return ResourcePackage(**kwargs)


class ResourcePolicy(Configurable):
    """The resource packages (sizes) learners may launch with, and the limits for guests."""

    resource_packages = Dict(
        help="""
        Resource packages by name (the `size` launch parameter picks one).

        Each value is a dict with any of: display_name, description, cpu_guarantee,
        cpu_limit (cores or "500m"), mem_guarantee, mem_limit (bytes or "1G"/"1Gi"),
        extra_resource_guarantees, extra_resource_limits (e.g. {"nvidia.com/gpu": "1"}:
        a package with a `*gpu*` resource is a GPU package), node_selector, tolerations,
        node_affinity_required. Listed in this order on the spawn form.
        """,
    ).tag(config=True)

    @default("resource_packages")
    def _default_packages(self) -> dict:
        return {name: dict(spec) for name, spec in DEFAULT_PACKAGES.items()}

    @validate("resource_packages")
    def _check_packages(self, proposal: Any) -> dict:
        packages = proposal["value"]
        if not packages:
            raise TraitError("ResourcePolicy.resource_packages must define at least one package")
        for name, spec in packages.items():
            try:
                build_package(name, spec)
            except ValueError as e:
                raise TraitError(f"ResourcePolicy.resource_packages: {e}") from None
        return packages

    default_size = Unicode(
        "small",
        help="Package used when the launch names no size and the image has no default size.",
    ).tag(config=True)

    anonymous_max_size = Unicode(
        "medium",
        allow_none=True,
        help="""
        The largest package anonymous (guest) users may get; None for no cap.
        Packages are compared by resources (every guarantee, limit and extra resource
        must be at most this package's). Asking for more is refused with 403; a larger
        image default is capped to this package.
        """,
    ).tag(config=True)

    gpu_size = Unicode(
        None,
        allow_none=True,
        help="""
        Package for images that require a GPU when the launch names no size and the
        image's default size has no GPU. None: the first GPU package.
        """,
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launch_policy()  # fail at load time on inconsistent config, not at launch

    def launch_policy(self) -> LaunchPolicy:
        """The validated, immutable policy that ``selection.plan_launch`` applies."""
        packages = {
            name: build_package(name, spec) for name, spec in self.resource_packages.items()
        }
        try:
            return LaunchPolicy(
                packages=packages,
                default_size=self.default_size,
                anonymous_max_size=self.anonymous_max_size or None,
                gpu_size=self.gpu_size or None,
            )
        except ValueError as e:
            raise TraitError(f"ResourcePolicy: {e}") from None
