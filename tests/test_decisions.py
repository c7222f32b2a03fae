"""Decisions kept apart from I/O, tested without a server: the failure path and error kinds."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    BusyLoadingError,
    NoPermissionError,
    OutOfMemoryError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamflow import HandlerTimeout, PayloadError, PayloadTooLarge, Reject, Retry
from streamflow.redis_errors import Kind, classify, is_transient
from streamflow.runtime.failures import Action, decide

RETRY = Retry(max_attempts=3, backoff=0.5)


def test_attempts_left_means_retry_with_the_policys_backoff() -> None:
    """A failure with attempts left is retried after the policy's delay for that attempt, with the
    jitter the reclaimer derives from the entry id."""
    d = decide(ValueError("boom"), 1, RETRY, 180.0, b"1-0")
    assert (d.action, d.error_type, d.error) == (Action.RETRY, "ValueError", "boom")
    assert d.retry_in == RETRY.delay(1, b"1-0")
    assert decide(ValueError("boom"), 2, RETRY, 180.0, b"1-0").retry_in == RETRY.delay(2, b"1-0")
    assert decide(ValueError("boom"), 1, Retry(max_attempts=3, backoff=0.5, jitter=0), None
                  ).retry_in == RETRY.base_delay(1)


def test_last_attempt_means_dead_letter() -> None:
    """The failure of the last allowed attempt (or a later one) dead-letters the entry."""
    assert decide(ValueError("x"), 3, RETRY, None).action is Action.DEAD_LETTER
    assert decide(ValueError("x"), 7, RETRY, None).action is Action.DEAD_LETTER


@pytest.mark.parametrize("exc", [Reject("no"), PayloadError("bad json"), PayloadTooLarge("big")])
def test_rejects_and_bad_payloads_are_dead_lettered_at_once(exc: Exception) -> None:
    """Reject and undecodable payloads skip the retries, even on the first attempt."""
    assert decide(exc, 1, RETRY, 180.0).action is Action.REJECT


def test_timeouts_are_named_with_the_handler_timeout() -> None:
    """A timeout is reported as HandlerTimeout with the timeout it exceeded."""
    d = decide(HandlerTimeout(), 1, RETRY, 2.5)
    assert (d.error_type, d.error) == ("HandlerTimeout", "handler timed out after 2.5s")


def test_an_exception_without_a_message_is_named_by_its_type() -> None:
    """An exception with an empty message still says what it was."""
    assert decide(KeyError(), 1, RETRY, None).error == "KeyError"
    assert decide(RuntimeError(), 1, RETRY, None).error == "RuntimeError"


@pytest.mark.parametrize(("exc", "kind"), [
    (RedisConnectionError("reset"), Kind.TRANSIENT),
    (RedisTimeoutError("slow"), Kind.TRANSIENT),
    (BusyLoadingError("LOADING Redis is loading the dataset in memory"), Kind.TRANSIENT),
    (ConnectionResetError(), Kind.TRANSIENT),
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), Kind.OOM),
    (NoPermissionError("this user has no permissions to run the 'xclaim' command"), Kind.NOPERM),
    (ResponseError("NOGROUP No such key 'orders' or consumer group 'g'"), Kind.NOGROUP),
    (ResponseError("BUSYGROUP Consumer Group name already exists"), Kind.BUSYGROUP),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
     Kind.WRONGTYPE),
    (ResponseError("OOM command not allowed when used memory > 'maxmemory'."), Kind.OOM),
    (ResponseError("NOPERM this user has no permissions"), Kind.NOPERM),
    (ResponseError("ERR Error running script (call to f_1): @user_script:3: -OOM command "
                   "not allowed"), Kind.OOM),
    (ResponseError("ERR unknown command 'XFOO'"), Kind.OTHER),
    (ValueError("not redis"), Kind.OTHER),
])
def test_redis_errors_are_classified_by_type_then_prefix(exc: BaseException, kind: Kind) -> None:
    """Every error the runtime meets gets the kind that decides retry, recreate or stop."""
    assert classify(exc) is kind
    assert is_transient(exc) is (kind is Kind.TRANSIENT)
