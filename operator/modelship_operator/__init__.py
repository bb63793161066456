"""modelship operator: ModelDeployment -> Deployment + Service + PDB, rolled forward and back by image.

Three layers (``docs/architecture.md`` draws them):

- :mod:`~modelship_operator.core`: the pure core - the API types (``core.api``, the one schema
  source), the builders of child objects, status, and the rollout engine (``core.rollout``).
- :mod:`~modelship_operator.reconcile`: one pass - read, plan, apply what differs, write status,
  record Events - returning when to come back.
- :mod:`~modelship_operator.runtime`: when passes run - kopf watches, the work queue, the watch
  cache, the workers, Lease leader election.

:mod:`~modelship_operator.kube` is the only module that talks to the Kubernetes API. Run the
operator with ``python -m modelship_operator``.
"""

from modelship_operator.core.api import API_VERSION, GROUP, KIND, PLURAL, VERSION

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION"]
