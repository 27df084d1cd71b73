"""`paddock approvals`: list held LLM calls, approve or reject them (with a reason)."""

from __future__ import annotations

import click

from ._client import Api, print_json, url_option

__all__ = ["approvals"]


@click.group()
def approvals() -> None:
    """Held LLM calls waiting for a human: list, approve, reject."""


@approvals.command("list")
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "rejected", "expired", "all"]),
    default="pending",
    show_default=True,
)
@url_option
def approvals_list(status: str, url: str) -> None:
    path = "/v1/approvals" if status == "all" else f"/v1/approvals?status={status}"
    for a in Api(url).call("GET", path)["approvals"]:
        who = a["runner_id"] or a["actor"]
        click.echo(
            f"{a['id']}  {a['status']:<8} {a['mode']:<5} {a['model']:<20}"
            f" ${a['estimate_usd']:.4f}  {a['rule']:<17} {who}"
        )


def _decide(verdict: str, approval_id: str, reason: str, url: str) -> None:
    print_json(Api(url).call("POST", f"/v1/approvals/{approval_id}/{verdict}", {"reason": reason}))


@approvals.command("approve")
@click.argument("approval_id")
@click.option("--reason", required=True, help="why (goes to the audit trail)")
@url_option
def approvals_approve(approval_id: str, reason: str, url: str) -> None:
    _decide("approve", approval_id, reason, url)


@approvals.command("reject")
@click.argument("approval_id")
@click.option("--reason", required=True, help="why (goes to the audit trail; the caller sees it)")
@url_option
def approvals_reject(approval_id: str, reason: str, url: str) -> None:
    _decide("reject", approval_id, reason, url)
