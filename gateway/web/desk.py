"""The badge desk's pages: find holders, register and edit them, photos, issue, preview, print and revoke badges.

Desk staff (and administrators) may change things; security leads may look holders up, nothing more. Every
view checks the role on the server; templates only hide what a role may not use.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload
from werkzeug.datastructures import FileStorage

from gateway import badges, cards, photos
from gateway import holders as registry
from gateway.db.models import Assignment, Badge, Holder, Organisation
from gateway.holders import Actor, AssignmentDraft, DeskError, HolderDraft, QualificationDraft
from gateway.site import Site
from gateway.web import personal
from gateway.web.app import services
from gateway.web.auth import login_required

bp = Blueprint("desk", __name__, url_prefix="/desk")
PAGE = 50


def actor() -> Actor:
    return Actor(g.operator.username, g.operator.id)


def may_see_photos() -> bool:
    return personal.for_operator().photo  # the one rule for personal details


def _holder(s: Session, holder_id: str) -> Holder:
    holder = s.get(Holder, holder_id)
    if holder is None:
        abort(404, description=f"no holder {holder_id!r}")
    return holder


def _badge(s: Session, badge_id: str) -> Badge:
    badge = s.get(Badge, badge_id)
    if badge is None:
        abort(404, description=f"no badge {badge_id!r}")
    return badge


def badge_state(badge: Badge, now: dt.datetime) -> str:
    if badge.revocation is not None:
        return "revoked"
    if badge.expires_at <= now:
        return "expired"
    return "valid"


# --- finding holders -----------------------------------------------------------------------------------


@bp.get("/")
@bp.get("/holders")
@login_required("desk", "lead")
def holders() -> Any:
    q = request.args.get("q", "").strip()[:100]
    org = request.args.get("organisation", "").strip()[:48]
    status = request.args.get("status", "")
    status = status if status in registry.STATUSES else ""
    page = max(request.args.get("page", 1, type=int), 1)
    with services().sessions() as s:
        rows, total = registry.search(s, q, org, status, PAGE, (page - 1) * PAGE)
        orgs = list(s.scalars(select(Organisation).order_by(Organisation.code)))
        return render_template(
            "desk/holders.html",
            rows=rows,
            total=total,
            q=q,
            org=org,
            status=status,
            page=page,
            pages=-(-total // PAGE),
            orgs=orgs,
        )


@bp.get("/holders/<holder_id>")
@login_required("desk", "lead")
def holder(holder_id: str) -> Any:
    svc = services()
    now = svc.now()
    with svc.sessions() as s:
        h = _holder(s, holder_id)
        assignment = registry.assignment_of(s, h.id)
        badge_rows = sorted(h.badges, key=lambda b: b.issued_at, reverse=True)
        return render_template(
            "desk/holder.html",
            h=h,
            assignment=assignment,
            badges=[(b, badge_state(b, now)) for b in badge_rows],
            site=svc.site,
            quals=registry.draft_of(h, svc.site).qualifications,
            show_photo=may_see_photos(),
            days=registry.local_days(svc.site, assignment.valid_from, assignment.valid_until) if assignment else None,
            shifts=registry.format_shifts(assignment.shifts) if assignment else "",
        )


@bp.get("/holders/<holder_id>/photo")
@login_required()
def photo(holder_id: str) -> Any:
    if not may_see_photos():
        abort(403)
    with services().sessions() as s:
        h = _holder(s, holder_id)
        if h.photo is None:
            abort(404, description="no photo")
        response = Response(h.photo, mimetype=h.photo_type or "image/jpeg")
    response.headers["Cache-Control"] = "private, no-store"
    return response


# --- registering and editing ---------------------------------------------------------------------------


@dataclass
class HolderForm:
    """What the holder form holds, as typed (re-shown as typed when there are problems)."""

    organisation: str = ""
    family_name: str = ""
    given_name: str = ""
    country: str = ""
    role: str = ""
    reference: str = ""
    qualifications: Mapping[str, tuple[bool, str, str]] | None = None  # kind -> (held, last day, reference)
    zones: tuple[str, ...] = ()
    first_day: str = ""
    last_day: str = ""
    shifts: str = ""

    @classmethod
    def from_request(cls, kinds: tuple[str, ...]) -> HolderForm:
        f = request.form
        return cls(
            organisation=f.get("organisation", "").strip(),
            family_name=f.get("family_name", "").strip(),
            given_name=f.get("given_name", "").strip(),
            country=f.get("country", "").strip().upper(),
            role=f.get("role", "").strip(),
            reference=f.get("reference", "").strip(),
            qualifications={
                k: (f.get(f"q_{k}") == "on", f.get(f"q_{k}_until", "").strip(), f.get(f"q_{k}_ref", "").strip())
                for k in kinds
            },
            zones=tuple(f.getlist("zones")),
            first_day=f.get("first_day", "").strip(),
            last_day=f.get("last_day", "").strip(),
            shifts=f.get("shifts", "").strip(),
        )

    @classmethod
    def of(cls, h: Holder, a: Assignment | None, days: tuple[dt.date, dt.date] | None) -> HolderForm:
        draft = registry.draft_of(h, services().site)
        return cls(
            organisation=h.organisation.code,
            family_name=h.family_name,
            given_name=h.given_name,
            country=h.country,
            role=h.role,
            reference=h.reference,
            qualifications={
                q.kind: (True, q.expires.isoformat() if q.expires else "", q.reference) for q in draft.qualifications
            },
            zones=tuple(a.zone_codes) if a else (),
            first_day=days[0].isoformat() if days else "",
            last_day=days[1].isoformat() if days else "",
            shifts=registry.format_shifts(a.shifts) if a else "",
        )

    def drafts(self) -> tuple[HolderDraft, AssignmentDraft | None, list[str]]:
        svc = services()
        problems: list[str] = []
        quals = []
        for kind, (held, until, ref) in (self.qualifications or {}).items():
            if not held:
                continue
            expires = None
            if until:
                expires, problem = registry.parse_date(until, f"last day of {kind}")
                if problem:
                    problems.append(problem)
            quals.append(QualificationDraft(kind, expires, ref))
        draft = HolderDraft(self.family_name, self.given_name, self.country, self.role, self.reference, tuple(quals))
        problems += registry.holder_problems(draft, svc.site)
        assignment = None
        if self.zones or self.first_day or self.last_day or self.shifts:
            zones, zone_problems = registry.parse_zones(" ".join(self.zones), svc.site)
            shifts, shift_problems = registry.parse_shifts(self.shifts)
            first, p1 = registry.parse_date(self.first_day, "first day")
            last, p2 = registry.parse_date(self.last_day, "last day")
            problems += zone_problems + shift_problems + [p for p in (p1, p2) if p]
            if first and last:
                assignment = AssignmentDraft(zones, first, last, shifts)
                problems += registry.assignment_problems(assignment, svc.site, svc.instance.settings.issuer)
        return draft, assignment, problems


def _form_page(
    form: HolderForm, h: Holder | None, problems: list[str], status: int = 200, session: Session | None = None
) -> Any:
    """The holder form. A caller inside a session passes it: on SQLite a second transaction would wait for the
    first (each takes the write lock at BEGIN) until the busy timeout, then fail."""
    svc = services()
    if session is not None:
        orgs = list(session.scalars(select(Organisation).order_by(Organisation.code)))
    else:
        with svc.sessions() as s:
            orgs = list(s.scalars(select(Organisation).order_by(Organisation.code)))
    return (
        render_template(
            "desk/holder_form.html",
            form=form,
            h=h,
            orgs=orgs,
            site=svc.site,
            problems=problems,
            show_photo=may_see_photos(),
        ),
        status,
    )


def _photo_upload() -> tuple[bytes | None, list[str]]:
    upload: FileStorage | None = request.files.get("photo")
    if upload is None or not upload.filename:
        return None, []
    try:
        return photos.prepare(upload.read()), []
    except photos.PhotoError as exc:
        return None, [f"photo: {exc}"]


@bp.route("/holders/new", methods=["GET", "POST"])
@login_required("desk")
def new_holder() -> Any:
    svc = services()
    kinds = svc.site.qualifications
    if request.method == "GET":
        today = dt.datetime.now(dt.UTC).date()
        form = HolderForm(
            organisation=request.args.get("organisation", ""),
            first_day=today.isoformat(),
            last_day=(today + dt.timedelta(days=30)).isoformat(),
        )
        return _form_page(form, None, [])
    form = HolderForm.from_request(kinds)
    draft, assignment, problems = form.drafts()
    photo_jpeg, photo_problems = _photo_upload()
    problems += photo_problems
    now = svc.now()
    with svc.sessions() as s:
        if registry.find_organisation(s, form.organisation) is None:
            problems.append("choose the holder's organisation (create it first under Contingents)")
    if problems:
        return _form_page(form, None, problems, 422)
    with svc.sessions() as s, s.begin():
        org = registry.find_organisation(s, form.organisation)
        assert org is not None
        h = registry.register(s, svc.site, org, draft, now)
        if assignment is not None:
            registry.set_assignment(s, svc.site, svc.instance.settings.issuer, h, assignment, now)
        if photo_jpeg is not None:
            h.photo, h.photo_type = photo_jpeg, "image/jpeg"
        holder_id, name = h.id, f"{h.given_name} {h.family_name}"
    flash(f"{name} is registered.")
    return redirect(url_for("desk.holder", holder_id=holder_id))


@bp.route("/holders/<holder_id>/edit", methods=["GET", "POST"])
@login_required("desk")
def edit_holder(holder_id: str) -> Any:
    svc = services()
    if request.method == "GET":
        with svc.sessions() as s:
            h = _holder(s, holder_id)
            a = registry.assignment_of(s, h.id)
            days = registry.local_days(svc.site, a.valid_from, a.valid_until) if a else None
            return _form_page(HolderForm.of(h, a, days), h, [], session=s)
    form = HolderForm.from_request(svc.site.qualifications)
    draft, assignment, problems = form.drafts()
    photo_jpeg, photo_problems = _photo_upload()
    problems += photo_problems
    if problems:
        with svc.sessions() as s:
            return _form_page(form, _holder(s, holder_id), problems, 422, session=s)
    with svc.sessions() as s, s.begin():
        h = _holder(s, holder_id)
        registry.update(s, svc.site, h, draft)
        if assignment is not None:
            registry.set_assignment(s, svc.site, svc.instance.settings.issuer, h, assignment, svc.now())
        if photo_jpeg is not None:
            h.photo, h.photo_type = photo_jpeg, "image/jpeg"
    flash("Changes saved. A badge already printed keeps its zones and dates: issue a new one if they changed.")
    return redirect(url_for("desk.holder", holder_id=holder_id))


@bp.post("/holders/<holder_id>/photo")
@login_required("desk")
def upload_photo(holder_id: str) -> Any:
    photo_jpeg, problems = _photo_upload()
    if not problems and photo_jpeg is None:
        problems = ["choose a JPEG or PNG photo to upload"]
    with services().sessions() as s, s.begin():
        h = _holder(s, holder_id)
        if photo_jpeg is not None:
            h.photo, h.photo_type = photo_jpeg, "image/jpeg"
    for p in problems:
        flash(p, "error")
    if not problems:
        flash("Photo saved (cropped to 35 x 45 and shrunk).")
    return redirect(url_for("desk.holder", holder_id=holder_id))


@bp.post("/holders/<holder_id>/suspend")
@login_required("desk")
def suspend(holder_id: str) -> Any:
    return _standing(holder_id, registry.suspend, "suspended: every gate refuses their badge from now on")


@bp.post("/holders/<holder_id>/reinstate")
@login_required("desk")
def reinstate(holder_id: str) -> Any:
    return _standing(holder_id, registry.reinstate, "reinstated")


def _standing(holder_id: str, change: Any, done: str) -> Any:
    svc = services()
    try:
        with svc.sessions() as s, s.begin():
            h = _holder(s, holder_id)
            change(s, h, request.form.get("reason", "").strip()[:200], svc.now(), actor())
            name = f"{h.given_name} {h.family_name}"
        flash(f"{name} is {done}.")
    except DeskError as exc:
        flash(str(exc), "error")
    return redirect(url_for("desk.holder", holder_id=holder_id))


# --- badges ------------------------------------------------------------------------------------------


@bp.route("/holders/<holder_id>/issue", methods=["GET", "POST"])
@login_required("desk")
def issue(holder_id: str) -> Any:
    svc = services()
    if request.method == "GET":
        with svc.sessions() as s:
            h = _holder(s, holder_id)
            a = registry.assignment_of(s, h.id)
            days = registry.local_days(svc.site, a.valid_from, a.valid_until) if a else None
            current = badges.current_badge(s, h.id, svc.now())
            problems = []
            if a is None:
                problems.append("no assignment yet: edit the holder to give zones and dates")
            else:
                problems = badges.qualification_problems(svc.site, h, a.zone_codes, a.valid_until)
            if h.status != "active":
                problems.append(f"the holder is {h.status}")
            return render_template(
                "desk/issue.html",
                h=h,
                a=a,
                days=days,
                site=svc.site,
                current=current,
                problems=problems,
                shifts=registry.format_shifts(a.shifts) if a else "",
            )
    inst = svc.instance
    try:
        with svc.sessions() as s, s.begin():
            h = _holder(s, holder_id)
            badge = badges.issue_from_assignment(s, svc.site, inst.keyring, inst.settings.issuer, h, svc.now(), actor())
            badge_id = badge.id
    except DeskError as exc:
        flash(str(exc), "error")
        return redirect(url_for("desk.issue", holder_id=holder_id))
    flash(f"Badge {badge_id} issued. Print it now; any earlier badge of this holder is revoked.")
    return redirect(url_for("desk.badge", badge_id=badge_id))


@bp.get("/badges/<badge_id>")
@login_required("desk")
def badge(badge_id: str) -> Any:
    svc = services()
    with svc.sessions() as s:
        b = _badge(s, badge_id)
        first, last = registry.local_days(svc.site, b.not_before, b.expires_at)
        return render_template(
            "desk/badge.html",
            b=b,
            h=b.holder,
            state=badge_state(b, svc.now()),
            first=first,
            last=last,
            site=svc.site,
            qr_version=cards.qr_version(b.token),
            can_preview=shutil.which("pdftoppm") is not None,
        )


def _card_pdf(badge_id: str) -> bytes:
    svc = services()
    with svc.sessions() as s:
        b = _badge(s, badge_id)
        if b.revocation is not None:
            abort(409, description="this badge is revoked: print its replacement instead")
        return cards.card_pdf([cards.face_for(svc.site, b, registry.assignment_of(s, b.holder_id))])


@bp.get("/badges/<badge_id>/card.pdf")
@login_required("desk")
def card_pdf(badge_id: str) -> Any:
    response = Response(_card_pdf(badge_id), mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="badge-{badge_id}.pdf"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/badges/<badge_id>/card.png")
@login_required("desk")
def card_png(badge_id: str) -> Any:
    """The card as the printer will print it (poppler renders the very PDF that is downloaded)."""
    pdf = _card_pdf(badge_id)
    try:
        png = cards.page_png(pdf, dpi=220)
    except (OSError, subprocess.SubprocessError):
        abort(404, description="no preview on this server (pdftoppm is missing); download the PDF")
    response = Response(png, mimetype="image/png")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.post("/badges/<badge_id>/revoke")
@login_required("desk")
def revoke(badge_id: str) -> Any:
    svc = services()
    reason = request.form.get("reason", "").strip()[:200] or "revoked at the desk"
    with svc.sessions() as s, s.begin():
        b = _badge(s, badge_id)
        holder_id = b.holder_id
        badges.revoke_badge(s, badge_id, reason, svc.now(), actor())
    flash(f"Badge {badge_id} is revoked: gates refuse it from the next scan on.")
    return redirect(url_for("desk.holder", holder_id=holder_id))


@bp.post("/badges/<badge_id>/reissue")
@login_required("desk")
def reissue(badge_id: str) -> Any:
    svc = services()
    inst = svc.instance
    reason = request.form.get("reason", "").strip()[:200] or "lost"
    try:
        with svc.sessions() as s, s.begin():
            _badge(s, badge_id)
            new = badges.reissue_badge(
                s, svc.site, inst.keyring, inst.settings.issuer, badge_id, reason, svc.now(), actor()
            )
            new_id = new.id
    except DeskError as exc:
        flash(f"Nothing changed: {exc}", "error")
        return redirect(url_for("desk.badge", badge_id=badge_id))
    flash(f"Badge {badge_id} is revoked ({reason}); its replacement is {new_id}. Print it now.")
    return redirect(url_for("desk.badge", badge_id=new_id))


# --- contingents and batch printing ------------------------------------------------------------------


@bp.get("/organisations")
@login_required("desk")
def organisations() -> Any:
    svc = services()
    now = svc.now()
    with svc.sessions() as s:
        counts = dict(s.execute(select(Holder.organisation_id, func.count()).group_by(Holder.organisation_id)).all())
        assigned = dict(
            s.execute(
                select(Holder.organisation_id, func.count()).join(Assignment).group_by(Holder.organisation_id)
            ).all()
        )
        live = dict(
            s.execute(
                select(Holder.organisation_id, func.count(func.distinct(Badge.holder_id)))
                .join(Badge)
                .where(Badge.expires_at > now, ~Badge.revocation.has())
                .group_by(Holder.organisation_id)
            ).all()
        )
        orgs = list(s.scalars(select(Organisation).order_by(Organisation.code)))
        return render_template(
            "desk/organisations.html",
            orgs=orgs,
            counts=counts,
            assigned=assigned,
            live=live,
            kinds=registry.ORGANISATION_KINDS,
        )


@bp.post("/organisations")
@login_required("desk")
def create_organisation() -> Any:
    f = request.form
    code = f.get("code", "").strip()
    try:
        with services().sessions() as s, s.begin():
            registry.create_organisation(
                s, code, f.get("name", "").strip(), f.get("kind", ""), f.get("country", "").strip().upper()
            )
        flash(f"Organisation {code} created.")
    except DeskError as exc:
        flash(str(exc), "error")
    return redirect(url_for("desk.organisations"))


@bp.post("/organisations/<code>/issue")
@login_required("desk")
def issue_organisation(code: str) -> Any:
    svc = services()
    inst = svc.instance
    with svc.sessions() as s, s.begin():
        org = registry.find_organisation(s, code)
        if org is None:
            abort(404)
        result = badges.issue_for_organisation(s, svc.site, inst.keyring, inst.settings.issuer, org, svc.now(), actor())
        issued = len(result.issued)
        problems = [
            f"{h.given_name} {h.family_name}: {why}" for h, why in result.skipped if not why.startswith("already")
        ]
    flash(f"{issued} badge(s) issued for {code}.")
    for p in problems[:30]:
        flash(p, "error")
    if len(problems) > 30:
        flash(f"... and {len(problems) - 30} more without a badge", "error")
    return redirect(url_for("desk.organisations"))


@bp.get("/organisations/<code>/cards.pdf")
@login_required("desk")
def organisation_cards(code: str) -> Any:
    """Every current badge of the contingent on A4 sheets, ten to a page, by family name."""
    svc = services()
    now = svc.now()
    with svc.sessions() as s:
        org = registry.find_organisation(s, code)
        if org is None:
            abort(404)
        faces = organisation_faces(s, svc.site, org, now)
    if not faces:
        flash(f"{code} has no current badge to print: issue them first.", "error")
        return redirect(url_for("desk.organisations"))
    response = Response(cards.sheet_pdf(faces), mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="badges-{code}.pdf"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


def organisation_faces(s: Session, site: Site, org: Organisation, now: dt.datetime) -> list[cards.CardFace]:
    """The card faces of every current badge of a contingent, by family name."""
    rows = s.scalars(
        select(Badge)
        .join(Holder)
        .where(Holder.organisation_id == org.id, Badge.expires_at > now, ~Badge.revocation.has())
        .options(selectinload(Badge.holder).selectinload(Holder.organisation))
        .order_by(Holder.family_name, Holder.given_name, Badge.issued_at)
    ).all()
    held = [b.holder_id for b in rows]
    assignments = {
        a.holder_id: a
        for a in s.scalars(
            select(Assignment).where(Assignment.holder_id.in_(held)).options(selectinload(Assignment.shifts))
        )
    }
    return [cards.face_for(site, b, assignments.get(b.holder_id)) for b in rows]
