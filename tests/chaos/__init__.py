"""Fault-injection (chaos) suite: real worker subprocesses, private servers, a TCP proxy.

Run with ``python -m pytest -m chaos tests/chaos`` (reduced size, a few minutes);
``STREAMFLOW_CHAOS_FULL=1`` multiplies message counts (full size). See docs/reliability.md.
"""
