"""The JSON documents of the listing commands (checks, profiles, baseline list/show, snapshot):
a document with a schema name, never a bare list, so a consumer can tell what it reads and
fields can be added later (docs/schemas/ describes each)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gpunode import __version__


def _doc(schema: str, **fields: Any) -> dict:
    return {"schema": schema, "gpunode_version": __version__, **fields}


def checks_document(profile, checks) -> dict:
    return _doc("gpunode.checks/1", profile=profile.name, checks=[
        {"id": c.id, "area": c.area, "severity": c.severity, "tags": sorted(c.tags), "title": c.title,
         "needs_root": c.needs_root, "needs_gpu": c.needs_gpu, "cost": c.cost, "remediation": c.remediation}
        for c in checks])


def profiles_document(profiles) -> dict:
    return _doc("gpunode.profiles/1", profiles=[{"name": p.name, "description": p.description} for p in profiles])


def profile_document(profile) -> dict:
    settings = []
    for s in profile.settings.values():
        item = {"id": s.id, **asdict(s)}
        item["tags"] = list(s.tags)
        settings.append(item)
    return _doc("gpunode.profile/1", name=profile.name, description=profile.description, files=list(profile.files),
                settings=settings)


def baselines_document(rows: list[dict]) -> dict:
    return _doc("gpunode.baselines/1", baselines=rows)


def baseline_row(entry, baseline=None, error: str | None = None) -> dict:
    return {"name": entry.name, "origin": entry.origin, "file": str(entry.path),
            "matches": (baseline.match.describe() if baseline.match else None) if baseline else None,
            "metrics": len(baseline.expectations) if baseline else None, "error": error}


def baseline_document(b) -> dict:
    return _doc("gpunode.baseline-resolved/1", name=b.name, description=b.description,
                matches=b.match.describe() if b.match else None, files=[str(p) for p in b.chain],
                metrics=[{"key": e.key, "metric": e.metric, "value": e.value, "unit": e.unit, "better": e.better,
                          "warn": e.warn, "fail": e.fail, "conditions": e.conditions, "basis": e.basis,
                          "source": e.source} for e in b.expectations])


def snapshot_document(output, files: int, commands: int) -> dict:
    return _doc("gpunode.snapshot-result/1", output=str(output), files=files, commands=commands)
