"""``make demo`` = the production ``jupyterhub_config.py`` + these dev-cluster overrides.

Set by ``cnbi-devcluster demo`` in the environment: the production config's path, the dev
cluster's ``KUBECONFIG``, ``CNBI_*`` values and the admin token it writes to demo.json.
"""

import json
import os

c = get_config()  # noqa: F821
# A warm pool of one ready server per demo course: the first click opens at pool speed.
# Set before the production config reads it (the cnbi service reads the same variable).
os.environ.setdefault(
    "CNBI_POOL_TARGETS", json.dumps({"uai-intro": 1, "python-basics": 1, "data-science": 1})
)
load_subconfig(os.environ["CNBI_PRODUCTION_CONFIG"])  # noqa: F821

# Internal ports picked free by `cnbi-devcluster demo`, so nothing else on the machine clashes.
c.JupyterHub.hub_port = int(os.environ["CNBI_DEMO_HUB_PORT"])
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ['CNBI_DEMO_PROXY_API_PORT']}"

# Pods are local processes on the dev cluster: short timeouts, no storage class.
c.KubeSpawner.start_timeout = 60
c.KubeSpawner.http_timeout = 30
c.KubeSpawner.storage_pvc_ensure = False
c.CullerSettings.cull_every = 30

# A local admin token (written to .demo/demo.json) that may also request builds, and a
# demo course author "author" (see the end of this file).
c.JupyterHub.services.append(
    {"name": "demo-admin", "api_token": os.environ["CNBI_DEMO_ADMIN_TOKEN"]}
)
c.JupyterHub.load_roles.append(
    {
        "name": "demo-admin",
        "scopes": ["admin:users", "admin:servers", "admin:groups", "custom:cnbi:builds",
                   "access:services", "read:metrics"],
        "services": ["demo-admin"],
    }
)  # fmt: skip
c.JupyterHub.load_groups = {"course-authors": {"users": ["author"]}}

# Learners come through /tmplogin as usual; the demo author signs in at /hub/login
# (user "author", password "author") to try the catalog and the build pages.
from jupyterhub.auth import DummyAuthenticator  # noqa: E402

from cnbi_spawner.auth import TmpLoginMixin  # noqa: E402


class DemoAuthenticator(TmpLoginMixin, DummyAuthenticator):
    """/tmplogin for learners plus a password form for the demo course author."""


c.JupyterHub.authenticator_class = DemoAuthenticator
c.DummyAuthenticator.password = "author"
c.Authenticator.allowed_users = {"author"}
