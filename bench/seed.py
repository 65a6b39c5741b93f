"""The data every API measurement runs against, made through the API itself: the bench user,
then what each module's bench part seeds (bench/modules/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

ACCOUNT = {"email": "bench@example.com", "username": "bench", "password": "bench-password"}


@dataclass
class Seed:
    token: str
    # What each module seeded, by module name.
    data: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def log_in(client: httpx.Client) -> Seed:
    """Register the bench user and log `client` in as it."""
    client.post("/api/v1/auth/register", json=ACCOUNT).raise_for_status()
    login = client.post(
        "/api/v1/auth/token", data={"username": ACCOUNT["email"], "password": ACCOUNT["password"]}
    )
    login.raise_for_status()
    token = login.json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return Seed(token)
