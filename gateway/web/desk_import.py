"""CSV import on the page: the file is checked and imported in the background while the page shows progress.

A job lives in this web process's memory (its file too, so the good rows can be imported after a report
without uploading again); it is forgotten an hour after it ends. The import itself is one transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, abort, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from gateway import holders as registry
from gateway import holders_csv
from gateway.db.models import Organisation
from gateway.holders import Actor, DeskError
from gateway.web.app import Services, services
from gateway.web.auth import login_required

log = logging.getLogger(__name__)
bp = Blueprint("desk_import", __name__, url_prefix="/desk/import")
KEEP = dt.timedelta(hours=1)


@dataclass
class ImportJob:
    id: str
    operator_id: int
    actor: Actor
    organisation: str
    filename: str
    data: bytes
    good_rows_only: bool
    stage: str = "waiting"  # waiting, checking, importing, done, refused, failed
    done: int = 0
    total: int = 0
    imported: int = 0
    good: int = 0
    problems: list[holders_csv.RowProblem] = field(default_factory=list)
    message: str = ""
    ended: dt.datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "imported": self.imported,
            "good_rows": self.good,
            "bad_rows": len({p.line for p in self.problems}),
            "message": self.message,
            "finished": self.ended is not None,
        }


class ImportJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, ImportJob] = {}
        self._lock = threading.Lock()

    def start(self, svc: Services, job: ImportJob) -> None:
        with self._lock:
            now = svc.now()
            for key in [k for k, j in self._jobs.items() if j.ended and now - j.ended > KEEP]:
                del self._jobs[key]
            self._jobs[job.id] = job
        threading.Thread(target=_run, args=(svc, job), name=f"import-{job.id}", daemon=True).start()

    def get(self, job_id: str, operator_id: int) -> ImportJob | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.operator_id == operator_id else None


def jobs(svc: Services) -> ImportJobs:
    found = svc.extras.get("imports")
    if not isinstance(found, ImportJobs):
        found = svc.extras.setdefault("imports", ImportJobs())
    return found


def _run(svc: Services, job: ImportJob) -> None:
    def progress(stage: str, done: int, total: int) -> None:
        job.stage, job.done, job.total = stage, done, total

    try:
        with svc.sessions() as s, s.begin():
            org = registry.find_organisation(s, job.organisation)
            if org is None:
                raise DeskError(f"no organisation {job.organisation!r}")
            checked = holders_csv.check_file(
                job.data, svc.site, svc.instance.settings.issuer, s, org, org.country, progress
            )
            job.problems, job.good = checked.problems, len(checked.good)
            if checked.problems and not job.good_rows_only:
                job.stage = "refused"
                job.message = (
                    f"{len(checked.bad_lines)} row(s) have problems, so nothing was imported. Fix the file, or "
                    f"import the {len(checked.good)} good row(s) only."
                )
                return
            result = holders_csv.import_checked(
                s, svc.site, org, checked, svc.now(), job.actor, job.filename, job.good_rows_only, progress
            )
            job.imported = result.imported
        job.stage = "done"
        job.message = f"{result.imported} holder(s) imported into {job.organisation}." + (
            f" {len(result.skipped_lines)} bad row(s) were left out." if result.skipped_lines else ""
        )
    except DeskError as exc:
        job.stage, job.message = "refused", f"Nothing was imported: {exc}"
    except Exception as exc:  # the transaction rolled back: say so rather than leave the page spinning
        log.exception("import %s failed", job.id)
        job.stage, job.message = "failed", f"Nothing was imported: the import failed ({type(exc).__name__})."
    finally:
        job.ended = svc.now()


@bp.get("")
@login_required("desk")
def start() -> Any:
    with services().sessions() as s:
        orgs = list(s.scalars(select(Organisation).order_by(Organisation.code)))
    return render_template(
        "desk/import.html", orgs=orgs, columns=holders_csv.REQUIRED + holders_csv.OPTIONAL, error=None
    )


@bp.post("")
@login_required("desk")
def upload() -> Any:
    svc = services()
    upload = request.files.get("file")
    organisation = request.form.get("organisation", "").strip()
    if upload is None or not upload.filename or not organisation:
        abort(400, description="choose the organisation and a CSV file")
    job = ImportJob(
        id=secrets.token_urlsafe(9),
        operator_id=g.operator.id,
        actor=Actor(g.operator.username, g.operator.id),
        organisation=organisation,
        filename=upload.filename[:120],
        data=upload.read(),
        good_rows_only=request.form.get("good_rows_only") == "on",
    )
    jobs(svc).start(svc, job)
    return redirect(url_for("desk_import.show", job_id=job.id))


@bp.post("/<job_id>/good-rows")
@login_required("desk")
def good_rows(job_id: str) -> Any:
    svc = services()
    old = jobs(svc).get(job_id, g.operator.id)
    if old is None:
        abort(404)
    job = ImportJob(
        id=secrets.token_urlsafe(9),
        operator_id=old.operator_id,
        actor=old.actor,
        organisation=old.organisation,
        filename=old.filename,
        data=old.data,
        good_rows_only=True,
    )
    jobs(svc).start(svc, job)
    return redirect(url_for("desk_import.show", job_id=job.id))


@bp.get("/<job_id>")
@login_required("desk")
def show(job_id: str) -> Any:
    job = jobs(services()).get(job_id, g.operator.id)
    if job is None:
        abort(404)
    return render_template("desk/import_job.html", job=job)


@bp.get("/<job_id>/progress")
@login_required("desk")
def progress(job_id: str) -> Any:
    job = jobs(services()).get(job_id, g.operator.id)
    if job is None:
        abort(404)
    return jsonify(job.as_json())
