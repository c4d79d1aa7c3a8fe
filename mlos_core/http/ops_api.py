"""Operations: health, status, Prometheus metrics, machine resources."""
from __future__ import annotations

import asyncio
import os

from aiohttp import web

from .. import __version__
from ..dataplane import DataPlane
from ..metrics import Metrics
from ..plugins import all_plugins
from ..resources import system_resources
from .common import json_response

KERNEL_DEVICE = "/dev/mlos-ml"


def _backends() -> dict:
    out = {}
    for p in all_plugins():
        ok, detail = p.availability()
        out[p.format] = {"plugin": p.id, "available": ok, ("version" if ok else "reason"): detail}
    return out


def _status_row(row: dict) -> dict:
    """A model's row for /status: an LLM engine's histograms (whole in /metrics) become means."""
    llm = row.get("llm")
    if not llm:
        return row
    summary = {k: v for k, v in llm.items() if not isinstance(v, dict)}
    itl = llm.get("inter_token_latency_seconds") or {}
    summary["inter_token_latency_ms_mean"] = round(1e3 * itl["sum"] / itl["count"], 2) if itl.get("count") else None
    return {**row, "llm": summary}


class OpsApi:
    def __init__(self, plane: DataPlane, metrics: Metrics):
        self.plane = plane
        self.metrics = metrics

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/v1/health", self.health),
            web.get("/status", self.status),
            web.get("/metrics", self.prometheus),
            web.get("/v1/system/resources", self.resources),
        ]

    async def health(self, request: web.Request) -> web.Response:
        rows = self.plane.model_rows()
        return json_response({
            "status": "healthy",
            "version": __version__,
            "uptime_seconds": self.plane.stats()["uptime_seconds"],
            "backends": _backends(),
            "kernel": self._kernel(),
            "models": {
                "registered": len(rows),
                "ready": sum(r["state"] == "ready" for r in rows),
                "failed": sum(r["state"] == "failed" for r in rows),
            },
        })

    async def status(self, request: web.Request) -> web.Response:
        registry = self.plane.registry
        budget = int(registry.settings.memory_budget_mb * 2**20)
        rss = (await asyncio.to_thread(system_resources))["process"]["rss_bytes"]
        rows = [_status_row(r) for r in self.plane.model_rows()]
        return json_response({
            "status": "ok",
            "loaded_models": [r["id"] for r in rows if r["state"] == "ready"],
            "models": rows,
            "memory": {"models_bytes": registry.used_bytes(), "budget_bytes": budget or None, "process_rss_bytes": rss},
            "kernel": self._kernel(),
            **({"cluster": await self.plane.cluster.status()} if self.plane.cluster is not None else {}),
        })

    def _kernel(self) -> dict:
        """Which backend the local zero-copy path runs on, and why."""
        zc = self.plane.zerocopy
        state = zc.backend if zc is not None else {"mode": "off", "reason": "the zero-copy path is not running"}
        return {"device": KERNEL_DEVICE, "available": os.path.exists(KERNEL_DEVICE), **state,
                **({"served": zc.served, "failed": zc.failed} if zc is not None else {}),
                "inference_priority": self.plane.registry.thread_priority.status()}

    async def prometheus(self, request: web.Request) -> web.Response:
        body = self.metrics.render()  # on the loop: the gauges read live registry state
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def resources(self, request: web.Request) -> web.Response:
        return json_response(await asyncio.to_thread(system_resources))
