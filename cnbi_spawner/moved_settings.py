"""Settings that moved to another class are refused at start, naming their new place.

An old setting left in an operator's config would otherwise be dropped with a traitlets
warning only, and some of these matter: a forgotten ``link_signing_key`` is a hub that no
longer requires signed links. So the hub (authenticator, spawner) and the ``cnbi`` service
refuse to start and say where each setting lives now (the hub and the service both read
the new place from ``jupyterhub_config.py``).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from traitlets import TraitError
from traitlets.config import Config

#: old option name on TmpLoginMixin / TmpLoginAuthenticator -> its new home
FROM_TMPLOGIN = {
    "anonymous_group": "GuestPolicy.anonymous_group",
    "link_signing_key": "LinkSigning.key",
    "link_max_ttl": "LinkSigning.max_ttl",
    "registry_wait_timeout": "ImageRegistry.first_sync_timeout",
}
#: old option name on CNBiSpawner -> its new home
FROM_SPAWNER = {"registry_wait_timeout": "ImageRegistry.first_sync_timeout"}
#: old option name on LearnerLab -> its new home (the culler owns the deadline rule)
FROM_LEARNER_LAB = {"warn_lead": "CullerSettings.warn_lead"}
#: old option name on the service's CullerSettings -> its new home
FROM_CULLER = {
    "anonymous_group": "GuestPolicy.anonymous_group",
    "uuid_names_are_anonymous": "GuestPolicy.uuid_names_are_anonymous",
    "link_signing_key": "LinkSigning.key",
    "link_ttl": "LinkSigning.max_ttl",
    **{
        name: f"ServiceSettings.{name}"
        for name in (
            "namespace",
            "kubeconfig",
            "kubernetes",
            "registry",
            "registry_stale_limit",
            "public_hub_url",
        )
    },
}


def refuse_moved(config: Config, sections: Iterable[str], moved: Mapping[str, str]) -> None:
    """Raise ``TraitError`` if any of ``sections`` of ``config`` sets a moved option."""
    found = [
        f"c.{section}.{name} is now c.{new}"
        for section in dict.fromkeys(sections)
        if section in config
        for name, new in moved.items()
        if name in config[section]
    ]
    if found:
        raise TraitError(
            "These settings have moved; set them in their new place (the hub and the cnbi "
            "service both read it): " + "; ".join(found)
        )


def class_sections(cls: type) -> list[str]:
    """The config sections that configure ``cls``: its own name and its bases' names."""
    return [klass.__name__ for klass in cls.__mro__]
