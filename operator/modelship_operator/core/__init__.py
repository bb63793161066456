"""The pure core: the API types, the builders of child objects, status, and the rollout engine.

No I/O, no clock (``now`` is passed in), no environment reads: everything here is a function of
its arguments, and most of the unit tests live on this side.
"""
