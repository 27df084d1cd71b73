"""`paddock audit`: verify the chain (online, or an exported file offline), export it, and
fetch the signed checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ._client import Api, print_json, url_option

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """Verify, export and query the audit trail."""


@audit.command("verify")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="verify an exported JSONL file offline instead of asking the server",
)
@click.option(
    "--checkpoints",
    "cp_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="with --file: the signed checkpoints (GET /v1/audit/checkpoints)",
)
@url_option
def audit_verify(path: str | None, cp_path: str | None, url: str) -> None:
    """Recompute the hash chain; report the first broken record. Exit 1 when broken."""
    if path is None:
        report = Api(url).call("GET", "/v1/audit/verify")
    else:
        report = _verify_file(Path(path), Path(cp_path) if cp_path else None)
    print_json(report)
    if not report["ok"]:
        sys.exit(1)


def _verify_file(path: Path, cp_path: Path | None) -> dict[str, Any]:
    from dataclasses import asdict

    from paddock_core import check_checkpoints, verify_export

    with path.open("rb") as lines:
        try:
            found = verify_export(lines)
        except ValueError as exc:
            raise click.ClickException(f"{path}: {exc}") from exc
    hashes, org_id = found.hashes, found.org_id
    report: dict[str, Any] = asdict(found.verifier.report())
    if cp_path is not None:
        doc = json.loads(cp_path.read_text())
        checked, problem = check_checkpoints(
            doc["public_key"],
            org_id,
            [(cp["seq"], cp["hash"], cp["signature"]) for cp in doc["checkpoints"]],
            hashes,
            chain_broken=not report["ok"],
        )
        if problem is not None:
            report.update(
                ok=False, problem=report["problem"] or "checkpoint_mismatch", detail=problem
            )
        report["checkpoints_checked"] = checked
    return report


@audit.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@url_option
def audit_export(output: str, url: str) -> None:
    """Write the org's whole chain as JSONL (streamed)."""
    api = Api(url)
    count = 0
    with api.client.stream("GET", "/v1/audit/export") as response, open(output, "wb") as out:
        if response.status_code >= 400:
            response.read()
            raise click.ClickException(f"{response.status_code}: {response.text[:300]}")
        for chunk in response.iter_bytes():
            out.write(chunk)
            count += chunk.count(b"\n")
    click.echo(f"wrote {count} events to {output}")


@audit.command("checkpoints")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None)
@url_option
def audit_checkpoints(output: str | None, url: str) -> None:
    """The signed checkpoints and the public key that verifies them."""
    doc = Api(url).call("GET", "/v1/audit/checkpoints")
    if output:
        Path(output).write_text(json.dumps(doc, indent=2, default=str))
        click.echo(f"wrote {len(doc['checkpoints'])} checkpoints to {output}")
    else:
        print_json(doc)
