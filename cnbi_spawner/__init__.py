"""cnbi-spawner: anonymous course notebooks on JupyterHub + Kubernetes.

The image comes from the launch link (``/tmplogin?course=…&notebook=…``) and only
from a live registry of known images fed by OpenShift/ODH ImageStreams.
"""

__version__ = "0.1.0"
