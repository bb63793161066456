"""modelship operator: ModelDeployment -> Deployment + Service + PDB, rolled forward and back by image.

The pure core (``api``, ``builders``, ``status``) has no I/O; ``kube`` is the only module that
talks to the Kubernetes API; ``handlers`` wires kopf to ``reconcile``. Run it with
``python -m modelship_operator``.
"""

from modelship_operator.core.api import API_VERSION, GROUP, KIND, PLURAL, VERSION

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION"]
