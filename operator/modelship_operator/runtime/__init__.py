"""The runtime: kopf watches, the work queue, the watch cache, the workers, leader election.

It decides *when* a reconcile pass runs and feeds it a cached view of the API; what a pass
does is :mod:`modelship_operator.reconcile`'s business.
"""
