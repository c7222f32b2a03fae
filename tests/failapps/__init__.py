"""Helper apps and small async helpers for the failure-semantics tests.

``tests.failapps.killapp:app`` is run as a worker subprocess by ``test_reclaim.py``;
:mod:`failapps.support` holds the raw-client and XPENDING helpers the tests share (running
workers and waiting are :mod:`streamflow.testing`'s).
"""
