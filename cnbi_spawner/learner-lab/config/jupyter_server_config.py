# cnbi-spawner: puts the learner-lab server extension (../python) on the learner server's
# import path; the spawner adds this folder to JUPYTER_CONFIG_PATH (see cnbi_spawner.learner_lab).
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
