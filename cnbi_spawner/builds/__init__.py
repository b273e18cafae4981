"""Custom notebook image builds: CustomNBImage requests, objects and phases.

Pure code only (no I/O): ``validate`` turns an untrusted request body into a
``BuildRequest``, ``resource`` turns that into a CustomNBImage object, ``phases``
reads either CustomNBImage dialect's status back into the phases people see.
The service (``cnbi_spawner.service.builds``) and the dev cluster's build
controller (``cnbi_devcluster.builds``) do the I/O around them.
"""

GROUP = "meteor.zone"
VERSION = "v1alpha1"
PLURAL = "customnbimages"
KIND = "CustomNBImage"
