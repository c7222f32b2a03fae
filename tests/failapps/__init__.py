"""Helper apps and small async helpers for the failure-semantics tests.

``tests.failapps.killapp:app`` is run as a worker subprocess by ``test_reclaim.py``;
:mod:`failapps.support` holds the polling and worker-running helpers the tests share.
"""
