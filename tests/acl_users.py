"""ACL users for tests: made through the private server's default user, removed at the end."""

from __future__ import annotations

from typing import Any

import redis


def url_for(base_url: str, user: str | None, password: str) -> str:
    """``base_url`` (redis://127.0.0.1:PORT/0) with credentials."""
    rest = base_url.split("://", 1)[1]
    return f"redis://{user or ''}:{password}@{rest}"


class AclUsers:
    """Creates ACL users through the default user; deletes them when the test ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = redis.Redis.from_url(url, decode_responses=True)
        self.names: list[str] = []

    def user(self, name: str, rules: list[str]) -> str:
        """Create (or redefine) user ``name`` with ``rules``; return a URL that logs in as it."""
        self.admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">pw-{name}", *rules)
        self.names.append(name)
        return url_for(self.url, name, f"pw-{name}")

    def dryrun(self, name: str, *command: Any) -> str:
        """ACL DRYRUN ``command`` as ``name``: "OK" or the reason it would be refused."""
        return str(self.admin.execute_command("ACL", "DRYRUN", name, *command))

    def may(self, name: str, *command: Any) -> bool:
        """Whether ``name`` may run ``command`` (ACL DRYRUN says OK)."""
        try:
            return self.dryrun(name, *command) == "OK"
        except redis.ResponseError:
            return False

    def denials(self) -> list[dict[str, Any]]:
        """The ACL LOG entries of this test's users."""
        return [e for e in self.admin.execute_command("ACL", "LOG", 100)
                if e.get("username") in self.names]

    def close(self) -> None:
        for name in self.names:
            self.admin.execute_command("ACL", "DELUSER", name)
        self.admin.execute_command("ACL", "LOG", "RESET")
        self.admin.close()
