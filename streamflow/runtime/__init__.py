"""The consumer runtime: what happens to an entry between XREADGROUP and XACK.

One message's way, module by module::

    reader      XREADGROUP (carrying buffered acks) -> entries
    slots       the bounded pool of handler slots that run them
    acks        handled ids, acked with the next read or by the flusher
    failures    raised / timed out: park for a retry, or dead-letter (decisions apart from I/O)
    claims      XCLAIM of due retries, dead consumers' and this consumer's own entries
    reclaimer   finds what is due (XPENDING IDLE) and hands it to claims
    leases      renews long runners' idle time; the watchdog enforces timeouts
    groups      creates (and after NOGROUP recreates) the consumer groups
    maintenance prunes long-idle consumers, trims by the retention policy
    consumer    wires the parts for one handler; owns their tasks

Beside the message's way, for the worker as a whole::

    identity    the worker's consumer name and the leases that keep it its own
    stopped     the start-up report of work that stopped consumers left pending

Each module imports only from modules listed above it (and from the package's bottom
layer); :mod:`streamflow.worker` runs one :class:`~.consumer.Consumer` per handler.
"""
