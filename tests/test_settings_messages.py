"""Start-up messages about settings say what the user gave and what is wrong with it.

Each case is one a new user hits: a setting blamed that the user never set, a number that
must be whole, a database path that is no number, a cluster URL with a database, a misspelt
variable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from streamflow import App, ConfigError, Message, Settings, config
from streamflow.connection import Connection
from streamflow.embedded import free_port
from streamflow.testing import running_worker

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m streamflow ARGS`` with only the given STREAMFLOW_* variables set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    return subprocess.run([sys.executable, "-m", "streamflow", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamflow: error: "), proc.stderr
    return lines[0]


def test_short_visibility_timeout_names_the_setting_the_user_gave() -> None:
    """STREAMFLOW_VISIBILITY_TIMEOUT=0.5 is blamed by name and variable, against the default
    reclaim_interval, instead of blaming the reclaim_interval the user never set."""
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"STREAMFLOW_VISIBILITY_TIMEOUT": "0.5"})
    assert info.value.setting == "visibility_timeout"
    text = str(info.value)
    assert "visibility_timeout (STREAMFLOW_VISIBILITY_TIMEOUT=0.5)" in text, text
    assert "must be longer than reclaim_interval (default 1.0 s)" in text, text
    line = _one_line_error(_cli("run", "tests.apps.slow:app", "--redis-url",
                                f"redis://127.0.0.1:{free_port()}/0",
                                STREAMFLOW_VISIBILITY_TIMEOUT="0.5"))
    assert "visibility_timeout (STREAMFLOW_VISIBILITY_TIMEOUT=0.5)" in line, line


def test_long_reclaim_interval_is_blamed_when_the_user_gave_it() -> None:
    """STREAMFLOW_RECLAIM_INTERVAL above the default visibility_timeout names reclaim_interval and its
    variable."""
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"STREAMFLOW_RECLAIM_INTERVAL": "90"})
    assert info.value.setting == "reclaim_interval"
    assert "(STREAMFLOW_RECLAIM_INTERVAL=90)" in str(info.value)
    assert "visibility_timeout (default 60.0 s)" in str(info.value)


def test_other_bad_env_values_name_their_variable() -> None:
    """A value from the environment that fails a check is shown with its variable, e.g. concurrency
    (STREAMFLOW_CONCURRENCY=0)."""
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"STREAMFLOW_CONCURRENCY": "0"})
    assert info.value.setting == "concurrency"
    assert "concurrency (STREAMFLOW_CONCURRENCY=0)" in str(info.value)


@pytest.mark.parametrize("raw", ["1.5", "1e3", "many"])
def test_fractional_count_in_env_says_it_must_be_whole(raw: str) -> None:
    """STREAMFLOW_BLOCK_MS=1.5 says the value must be a whole number (not that it is not a number)."""
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"STREAMFLOW_BLOCK_MS": raw})
    assert info.value.setting == "STREAMFLOW_BLOCK_MS"
    assert f"{raw!r} is not a whole number" in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://localhost/abc", "redis://localhost:6380/0/1", "rediss://h/-1",
            "redis://localhost/0?db=x"],
)
def test_database_that_is_not_a_whole_number_is_refused(url: str) -> None:
    """A redis:// URL whose database (path or ?db=) is not a whole number is refused at start-up, not
    silently read as db 0."""
    with pytest.raises(ConfigError) as info:
        Settings.load({"redis_url": url}, env={})
    assert info.value.setting == "redis_url"
    assert "database" in str(info.value) and "whole number" in str(info.value), str(info.value)


@pytest.mark.anyio
async def test_connection_refuses_a_bad_database_too() -> None:
    """`streamflow info` builds a Connection without Settings: it refuses redis://host/abc as well."""
    conn = Connection("redis://127.0.0.1:1/abc")
    try:
        with pytest.raises(ConfigError) as info:
            await conn.client()
    finally:
        await conn.aclose()
    assert info.value.setting == "redis_url" and "database" in str(info.value)
    line = _one_line_error(_cli("info", "--redis-url", "redis://127.0.0.1:1/abc"))
    assert "database" in line


def test_good_databases_are_accepted() -> None:
    """redis://h, redis://h/, redis://h/3, ?db=4 and unix:// paths are valid URLs."""
    for url in ("redis://h", "redis://h/", "redis://h:1/3", "redis://h/?db=4", "unix:///tmp/r.sock?db=2",
                "rediss://h/15"):
        assert Settings.load({"redis_url": url}, env={}).redis_url == url


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:7000/0", "rediss+cluster://h:7000",
                                 "redis+cluster://h:7000?db=0"])
def test_cluster_urls_are_accepted(url: str) -> None:
    """redis+cluster:// and rediss+cluster:// are Redis Cluster URLs (database 0 only)."""
    assert Settings.load({"redis_url": url}, env={}).redis_url == url


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:7000/1", "rediss+cluster://h:7000?db=2"])
def test_cluster_urls_with_another_database_are_refused_at_start_up(url: str) -> None:
    """A Redis Cluster has database 0 only: another one stops the worker at start-up, one line."""
    with pytest.raises(ConfigError) as info:
        Settings.load({"redis_url": url}, env={})
    assert info.value.setting == "redis_url"
    assert "only database 0" in str(info.value), str(info.value)
    line = _one_line_error(_cli("run", "tests.apps.slow:app", "--redis-url", url))
    assert "only database 0" in line


def test_unknown_env_vars_are_found_with_the_closest_setting() -> None:
    """A misspelt STREAMFLOW_* variable is reported with the closest setting's variable; settings and
    streamflow's other variables are not reported."""
    env = {"STREAMFLOW_CONCURENCY": "5", "STREAMFLOW_VISIBILTY_TIMEOUT": "5", "STREAMFLOW_XYZZY": "1",
           "STREAMFLOW_CONCURRENCY": "5", "STREAMFLOW_SERVER_BINARY": "redis",
           "STREAMFLOW_CHAOS_FULL": "1", "STREAMFLOW_CHAOS_RESULTS": "/tmp/x", "PATH": "/bin"}
    assert config.unknown_env_vars(env) == [
        ("STREAMFLOW_CONCURENCY", "STREAMFLOW_CONCURRENCY"),
        ("STREAMFLOW_VISIBILTY_TIMEOUT", "STREAMFLOW_VISIBILITY_TIMEOUT"),
        ("STREAMFLOW_XYZZY", None),
    ]


@pytest.mark.anyio
async def test_worker_warns_about_a_misspelt_variable_at_start_up(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started with STREAMFLOW_CONCURENCY set logs one warning naming it and
    STREAMFLOW_CONCURRENCY, and none for STREAMFLOW_SERVER_BINARY or STREAMFLOW_CHAOS_FULL."""
    for name in [k for k in os.environ if k.startswith("STREAMFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STREAMFLOW_CONCURENCY", "5")
    monkeypatch.setenv("STREAMFLOW_SERVER_BINARY", "redis")
    monkeypatch.setenv("STREAMFLOW_CHAOS_FULL", "0")
    app = App()

    @app.handler("typo-jobs")
    async def handle(msg: Message) -> None: ...

    with structlog.testing.capture_logs() as logs:
        async with running_worker(app, redis_url):
            await anyio.sleep(0)
    warnings: list[dict[str, Any]] = [e for e in logs if e["event"] == "unknown_environment_variable"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["variable"] == "STREAMFLOW_CONCURENCY"
    assert warnings[0]["did_you_mean"] == "STREAMFLOW_CONCURRENCY"
    assert warnings[0]["log_level"] == "warning"


def test_every_streamflow_variable_the_repository_reads_is_known() -> None:
    """Each STREAMFLOW_* variable named in the code, tests, examples and benchmarks is a setting or in
    OTHER_ENV_VARS, so no variable streamflow reads itself is reported as unknown."""
    names: set[str] = set()
    for folder in ("streamflow", "tests", "examples", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name != Path(__file__).name:
                names |= set(re.findall(r"\bSTREAMFLOW_[A-Z][A-Z_]*[A-Z]\b", path.read_text()))
    assert "STREAMFLOW_SERVER_BINARY" in names and "STREAMFLOW_CHAOS_RESULTS" in names
    assert config.unknown_env_vars(dict.fromkeys(names, "1")) == []


def test_bad_redis_url_from_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad STREAMFLOW_REDIS_URL is reported with its variable, through App.settings as through
    Settings.load."""
    monkeypatch.setenv("STREAMFLOW_REDIS_URL", "redis://localhost/abc")
    with pytest.raises(ConfigError) as info:
        App().settings()
    assert info.value.setting == "redis_url"
    assert "(STREAMFLOW_REDIS_URL=redis://localhost/abc)" in str(info.value), str(info.value)
    assert App("redis://localhost/1").settings().redis_url == "redis://localhost/1"
    assert App().settings(redis_url="redis://h/2").redis_url == "redis://h/2"
