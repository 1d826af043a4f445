"""What apply, rollback and history print: a table for people, JSON (gpunode.apply/1) for
the fleet playbooks."""

from __future__ import annotations

from gpunode.layout import show_table

APPLY_SCHEMA = "gpunode.apply/1"
ROLLBACK_SCHEMA = "gpunode.rollback/1"
HISTORY_SCHEMA = "gpunode.history/1"


def change_rows(changes, statuses: dict[int, str]) -> list[dict]:
    from gpunode.tune.actions import action_of

    rows = []
    for i, c in enumerate(changes):
        shown = action_of(c).whole_file  # file states are bytes: show their description
        rows.append({
            "setting": c.setting_id,
            "subject": c.subject,
            "current": " ".join(str(c.current_text).split()),
            "target": " ".join(str(c.after_text).split()),
            "before": c.current_text if shown else c.before,
            "after": c.after_text if shown else c.after,
            "needs_root": c.needs_root,
            "reboot_required": c.reboot_required,
            "gpu_reset_required": c.gpu_reset_required,
            "status": statuses.get(i, "blocked" if c.blocked else "planned"),
            "note": c.blocked or c.note,
        })
    return rows


def apply_document(meta: dict, rows: list[dict], plan, result: str, reason: str = "", restored=()) -> dict:
    return {
        "schema": APPLY_SCHEMA,
        **meta,
        "result": result,
        "reason": reason or None,
        "changes": rows,
        "satisfied": list(plan.satisfied),
        "skipped": [{"setting": s, "reason": r} for s, r in plan.skipped],
        "rolled_back": [r.to_json() for r in restored],
    }


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


def render_changes(console, title: str, rows: list[dict], fmt: str | None = None) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("Setting", "Subject", "Current", "Target", "Root?", "Reboot?", "GPU reset?", "Status"):
        table.add_column(col, no_wrap=col in ("Setting", "Root?", "Reboot?", "GPU reset?"),
                         overflow="fold" if col == "Subject" else "ellipsis")
    for r in rows:
        status = r["status"] + (f": {r['note']}" if r["note"] else "")
        table.add_row(r["setting"], r["subject"], r["current"], r["target"], _yes(r["needs_root"]),
                      _yes(r["reboot_required"]), _yes(r["gpu_reset_required"]), status)
    show_table(console, table, fmt)


def render_restores(console, title: str, results, fmt: str | None = None) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("#", "Setting", "Subject", "Result", "Detail"):
        table.add_column(col, no_wrap=col in ("#", "Setting", "Result"))
    for r in results:
        style = {"restored": "green", "not-written": "dim", "left": "yellow", "error": "bold red"}[r.status]
        table.add_row(str(r.seq), r.change.setting_id, r.change.subject, f"[{style}]{r.status}[/]", r.detail)
    show_table(console, table, fmt)
