"""``swreg crl source add|list``, ``swreg revocation refresh|status`` (DESIGN.md §4a, §9).

``revocation refresh`` exits 0 when every source was fetched (or answered 304), verified and is
fresh, and the OCSP answer of every registered signing certificate is current; 1 otherwise.
``--json`` gives ``{ok, sources: [{url, origin, outcome, stored, crl_number, this_update,
next_update, fresh, error}], ocsp: [{url, fingerprint, serial, status, source, renewed,
checked_at, cache_until, problem, error}]}`` (with ``errors``, one per failed or stale source
and per OCSP answer not renewed, when not ok). Safe to run from cron on several machines at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from engine.cli.progress import CliProgress
from engine.cli.support import JsonOption, app_for, command

source_app = typer.Typer(help="CRL distribution points (憑證廢止清冊來源).", no_args_is_help=True)
revocation_app = typer.Typer(help="Revocation data (廢止狀態).", no_args_is_help=True)


@source_app.command("add")
def source_add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL")],
    as_json: JsonOption = False,
) -> None:
    """Add a CRL URL that `revocation refresh` fetches. 新增憑證廢止清冊來源。"""
    with command(as_json) as out:
        view, added = app_for(ctx).revocation.add_source(url)
        out.result.update(source=view.as_dict(), added=added)
        verb = "已加入 / added" if added else "已存在 / already known"
        out.say(f"{verb}: {view.url}")


@source_app.command("list")
def source_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the CRL sources and how their last refresh went. 列出憑證廢止清冊來源。"""
    with command(as_json) as out:
        views = app_for(ctx).revocation.sources()
        out.result["sources"] = [v.as_dict() for v in views]
        for v in views:
            out.say(f"{v.url}  [{v.origin}]  {v.outcome or '-'}  {v.checked_at or '-'}")
        if not views:
            out.say("尚無來源 / no CRL sources yet (swreg crl source add URL)")


@revocation_app.command("refresh")
def refresh(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Fetch every known CRL (conditional GET), verify and store it; renew the OCSP answers
    of registered signing certificates. Progress goes to stderr: a bar on a terminal, plain
    lines otherwise. 更新憑證廢止清冊與簽章憑證的 OCSP 狀態。"""
    with command(as_json) as out, CliProgress(as_json=as_json) as progress:
        report = app_for(ctx).revocation.refresh(actor="cli", progress=progress)
        out.result["sources"] = [s.as_dict() for s in report.sources]
        out.result["ocsp"] = [o.as_dict() for o in report.ocsp]
        for s in report.sources:
            mark = "✓" if s.ok else "✗"
            number = "-" if s.crl_number is None else s.crl_number
            why = f" ({s.error})" if s.error else ""
            out.say(f"{mark} {s.url}: {s.outcome} #{number} next {s.next_update or '-'}{why}")
        if not report.sources:
            out.say("尚無來源 / no CRL sources (swreg crl source add URL)")
        for o in report.ocsp:
            mark = "✓" if o.ok else "✗"
            why = f" ({o.problem}: {o.detail})" if o.problem else ""
            out.say(
                f"{mark} OCSP {o.url or '-'} serial {o.serial}: {o.status} [{o.source}] "
                f"until {o.cache_until or '-'}{why}"
            )
        failure = report.failure()
        if failure is not None:
            raise failure


@revocation_app.command("status")
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The stored CRLs, their age and freshness; the OCSP responders asked. 顯示廢止狀態。"""
    with command(as_json) as out:
        app = app_for(ctx)
        crls = app.revocation.status()
        responders = app.ocsp.responders()
        out.result.update(crls=[c.as_dict() for c in crls], ocsp=[r.as_dict() for r in responders])
        for c in crls:
            state = "fresh" if c.fresh else "STALE"
            part = f" [{c.partition}]" if c.partition else ""
            out.say(
                f"{state} {c.issuer}{part} #{c.crl_number}: {c.entries} entries, "
                f"next {c.next_update or '-'}"
            )
        if not crls:
            out.say("尚無憑證廢止清冊 / no CRLs stored")
        for r in responders:
            state = "reachable" if r.reachable else "UNREACHABLE"
            error = f" ({r.last_error})" if r.last_error else ""
            out.say(f"OCSP {state} {r.url} for {r.issuer}{error}, at {r.checked_at}")


__all__ = ["revocation_app", "source_app"]
