"""What the client commands share: the control plane's address and key, and JSON output."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
import httpx

__all__ = ["DEFAULT_URL", "Api", "admin_key_file", "print_json", "url_option"]

DEFAULT_URL = "http://127.0.0.1:8001"


def admin_key_file(data_dir: Path) -> Path:
    return data_dir / "admin_key"


class Api:
    def __init__(self, url: str) -> None:
        key = os.environ.get("PADDOCK_ADMIN_KEY")
        if not key:
            path = admin_key_file(Path(os.environ.get("PADDOCK_DATA_DIR", ".paddock")))
            key = path.read_text().strip() if path.exists() else ""
        if not key:
            raise click.ClickException("set PADDOCK_ADMIN_KEY (or run `paddock serve` here once)")
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=None
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach the control plane: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{response.status_code} {error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = f"{response.status_code}: {response.text[:300]}"
            raise click.ClickException(message)
        return response.json() if response.content else None


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


url_option = click.option("--url", envvar="PADDOCK_URL", default=DEFAULT_URL, show_default=True)
