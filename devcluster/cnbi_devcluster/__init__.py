"""The dev cluster: an embedded Kubernetes API emulator that real clients run against.

No Kubernetes, kube-apiserver or Docker is available on developer machines or CI, so this
package serves the subset of the Kubernetes API that KubeSpawner, kubernetes_asyncio, our
image registry and our service use, over real HTTP, plus a "kubelet" that makes pods run
as real local ``jupyterhub-singleuser`` processes (runtime ``process``) or as cheap
in-process stubs (runtime ``stub``). Fidelity reference: /work/shared/KUBE_API_SUBSET.md.

Use::

    from cnbi_devcluster import DevCluster

    async with DevCluster(state_dir, images={"registry.example/courses/x": content}) as c:
        c.kubeconfig            # Path of a kubeconfig for kubernetes_asyncio / KubeSpawner
        c.url                   # http://127.0.0.1:PORT
        c.add_image(repo, path) # seed homes of pods running repo from path
        c.set_missing(repo)     # pulls of repo fail (ErrImagePull); any other image pulls
        c.faults.pause("hang")  # or "503"; c.faults.resume(); c.faults.drop_watches();
        c.faults.latency = 0.2  # seconds added to every API request
        c.store.compact()       # forget watch history: resumes from older rvs get 410
        c.add_controller(factory)  # background task (e.g. the build controller)

In-process object API (synchronous, returns deep copies, raises ``ApiError`` with the
Kubernetes ``code``/``reason``)::

    c.create("v1", "configmaps", obj, namespace="default")
    c.get("image.openshift.io/v1", "imagestreams", name, namespace)
    c.list("v1", "pods", namespace=None, label_selector="a=b", field_selector="")
    c.replace(api_version, plural, obj, namespace, status=False)
    c.patch(api_version, plural, name, body, namespace, content_type=..., status=False)
    c.delete(api_version, plural, name, namespace, grace=None)
    c.pod_info(name, namespace)  # {"ip", "home", "log", "pid"} of a running pod

Admin endpoints (same bearer token): ``GET /_devcluster/faults``, ``POST
/_devcluster/faults/pause?mode=hang|503``, ``POST /_devcluster/faults/resume``, ``POST
/_devcluster/faults/drop-watches``, ``POST /_devcluster/faults/latency?seconds=S``, ``POST
/_devcluster/compact``, ``GET|POST /_devcluster/images`` (``{"repository", "path"}``), ``GET|POST
/_devcluster/missing-images`` (``{"repository", "missing": true|false}``),
``GET /_devcluster/pods``.

Modules: ``store`` (objects, resourceVersion, watch history), ``watchers``, ``strategy``
(per-kind defaults), ``discovery``, ``podspec`` and ``podstatus`` (pure: what a pod runs,
what the kubelet reports), ``tls``, ``selectors`` and ``patch`` (pure), ``routes`` (URL ->
resource, pure), ``resources`` (types, Status errors, validation), ``server`` (tornado
handlers), ``kubelet``, ``sandbox`` and ``runtimes`` (pods: the loop, their folders, their
processes), ``faults``, ``cluster`` (the facade), ``builds`` (the CustomNBImage build
controller), ``serve`` (``cnbi-devcluster serve``), ``demo`` (``cnbi-devcluster demo``) and
``cli`` (the ``cnbi-devcluster`` command). The CRDs served at start are the product's
``helm-values/crds/``: ``crds/`` here is a symlink to it, packed into the wheel.
"""

from .cluster import DevCluster
from .resources import ApiError

__all__ = ["ApiError", "DevCluster"]
