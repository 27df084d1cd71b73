"""The classifier of step 12: a moderation model reached through the gateway's own routing and
upstream wire, in the OpenAI `/moderations` shape:

    POST {base_url}/moderations  {"model": m, "input": text}
      -> {"results": [{"flagged": bool, "categories": {name: bool, ...}, ...}]}

It runs with the gateway's keys (the shared upstream, not an org's own key): classification is
the gateway's cost, not the caller's, so nothing is recorded against a budget; the step logs
each call and audits its verdict.
"""

from __future__ import annotations

from typing import Any

from paddock_core import UpstreamError

from ._orgs import OrgGateway
from ._proxy import Proxy
from ._routing import Router
from .checks import Verdict

__all__ = ["ModerationClient"]

_SHARED = OrgGateway()


class ModerationClient:
    """`await client(model, text)` -> `Verdict`; raises `UpstreamError` when it cannot tell."""

    def __init__(self, router: Router, proxy: Proxy) -> None:
        self._router = router
        self._proxy = proxy

    async def __call__(self, model: str, text: str) -> Verdict:
        route = self._router.route(model, _SHARED)
        spec = route.upstream.spec
        if spec.protocol != "openai":
            raise UpstreamError(
                f"classifier model {model!r} is served by {spec.name!r}, which has no"
                " /moderations endpoint (an OpenAI-protocol provider is needed)",
                reason="classifier_unsupported",
            )
        body = {"model": route.model, "input": text}
        reply = await self._proxy.complete(route.upstream, "/moderations", body, spec.headers)
        if not reply.ok:
            raise UpstreamError(
                f"classifier {spec.name!r} answered {reply.status}", reason="classifier_failed"
            )
        return _verdict(reply.json())


def _verdict(data: Any) -> Verdict:
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise UpstreamError("classifier answer has no `results`", reason="classifier_failed")
    first: dict[str, Any] = results[0]
    categories = first.get("categories")
    named = (
        tuple(sorted(str(k) for k, v in categories.items() if v is True))
        if isinstance(categories, dict)
        else ()
    )
    return Verdict(flagged=first.get("flagged") is True, categories=named)
