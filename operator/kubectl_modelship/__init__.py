"""``kubectl modelship``: get, history, rollback, retry and watch ModelDeployments.

Installed as the ``kubectl-modelship`` console script (pip extra ``kubectl``), which puts it on
PATH where kubectl finds plugins. Rollback and retry write the annotations documented in
:mod:`modelship_operator.core.rollout` (``modelship.io/rollback-to``, ``modelship.io/retry``), so they
work from plain ``kubectl annotate`` too; the plugin adds checks, a nonce and a wait for the
operator's acknowledgement.
"""

from kubectl_modelship.cli import main

__all__ = ["main"]
