"""Badge desk benchmark: import, issue and print 2,185 holders (46 national contingents) into A4 PDF sheets.

    .venv/bin/python bench/desk_batch.py [--holders 2185] [--contingents 46] [--database URL] [--keep DIR]

What is timed, end to end, on a fresh SQLite instance (or the PostgreSQL URL given): for each contingent its CSV
is checked and imported (one transaction each, as the desk does), then each contingent's badges are issued and
signed (audited, one transaction per contingent), then each contingent's cards are drawn to one A4 PDF (ten a
page). Every holder has a photo (stored before the clock starts: photos come from the desk, one by one), so
the PDFs embed 2,185 distinct JPEGs. Figures go to docs/performance.md, section "Badge desk: batch import,
issue and print". Target: under 30 s.
"""

from __future__ import annotations

import argparse
import io
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import badges, cards, holders_csv  # noqa: E402
from gateway import holders as registry  # noqa: E402
from gateway.cli import sync_site  # noqa: E402
from gateway.db.engine import make_engine, session_factory, upgrade  # noqa: E402
from gateway.db.models import Holder  # noqa: E402
from gateway.holders import Actor  # noqa: E402
from gateway.instance import create_instance, load_instance  # noqa: E402
from gateway.photos import prepare  # noqa: E402
from gateway.site import load_site  # noqa: E402
from gateway.web.desk import organisation_faces  # noqa: E402

_COUNTRIES = """DE ES IT BE NL PL PT GB IE AT CH SE NO FI DK CZ SK HU RO BG GR HR SI LU EE LV LT MT CY US CA BR AR
MX MA SN CI JP KR AU NZ IN QA AE IL UA"""
COUNTRIES = _COUNTRIES.split()  # 46 countries, as in 2024
FAMILY = ["Müller", "García", "Rossi", "Janssens", "de Vries", "Kowalski", "Silva", "Smith", "Nowak", "Öztürk", "Lund"]
GIVEN = ["Anna", "Jonas", "Lucía", "Marco", "Eva", "Piotr", "Ana", "James", "Zofia", "Ayşe", "Lars", "Chloé"]
ROLES = [
    "police",
    "police",
    "police",
    "gendarme",
    "dog_handler",
    "bomb_disposal",
    "anti_drone",
    "spotter",
    "supervisor",
]
ZONE_SETS = ["P C", "P C B", "P", "S T", "L A", "P C V", "P C B V"]
QUALIFICATIONS = {"L A": "airside_pass:2026-12-31:AS-{n}"}


def contingent_csv(country: str, size: int, rng: random.Random) -> bytes:
    lines = ["family_name,given_name,role,reference,qualifications,zones,first_day,last_day,shifts"]
    for n in range(size):
        zones = rng.choice(ZONE_SETS)
        lines.append(
            f"{rng.choice(FAMILY)},{rng.choice(GIVEN)},{rng.choice(ROLES)},{country}-{n:04d},"
            f"{QUALIFICATIONS.get(zones, '').format(n=n)},{zones},2026-07-18,2026-08-11,"
            + ("mon-fri 06:00-14:00" if n % 3 == 0 else "")
        )
    return ("\n".join(lines) + "\n").encode()


def photo(rng: random.Random) -> bytes:
    image = Image.new("RGB", (480, 640), tuple(rng.randrange(150, 230) for _ in range(3)))  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    skin = tuple(rng.randrange(90, 235) for _ in range(3))
    draw.ellipse((70, 440, 410, 800), fill=(30, 40, 60))
    draw.ellipse((150, 140, 330, 380), fill=skin)  # type: ignore[arg-type]
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return prepare(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holders", type=int, default=2185)
    parser.add_argument("--contingents", type=int, default=46)
    parser.add_argument("--database", default=None, help="default: SQLite in a temporary instance folder")
    parser.add_argument("--keep", type=Path, default=None, help="write the PDFs into this folder")
    args = parser.parse_args()

    rng = random.Random(2024)
    site = load_site(ROOT / "zones.yaml")
    with tempfile.TemporaryDirectory(prefix="desk-bench-") as tmp:
        folder = Path(tmp) / "instance"
        url = args.database or f"sqlite:///{folder / 'gateway.db'}"
        create_instance(folder, url, ROOT / "zones.yaml", site.code)
        upgrade(url)
        instance = load_instance(folder)
        sync_site(instance, site)
        sessions = session_factory(make_engine(url))
        by = Actor("bench")
        countries = COUNTRIES[: args.contingents]
        sizes = [
            args.holders // len(countries) + (1 if i < args.holders % len(countries) else 0)
            for i in range(len(countries))
        ]
        files = {c: contingent_csv(c, n, rng) for c, n in zip(countries, sizes, strict=True)}
        with sessions() as s, s.begin():
            for c in countries:
                registry.create_organisation(s, f"POL-{c}", f"National police of {c}", "police", c)

        # 1. import, one file per contingent, as the desk does
        t0 = time.perf_counter()
        for c in countries:
            with sessions() as s, s.begin():
                org = registry.find_organisation(s, f"POL-{c}")
                assert org is not None
                checked = holders_csv.check_file(files[c], site, instance.settings.issuer, s, org, org.country)
                assert not checked.problems, checked.problems[:3]
                holders_csv.import_checked(s, site, org, checked, _now(), by, f"{c}.csv")
        t_import = time.perf_counter() - t0

        # photos arrive one by one at the desk: stored outside the timed part
        with sessions() as s, s.begin():
            for holder in s.scalars(select(Holder)):
                holder.photo, holder.photo_type = photo(rng), "image/jpeg"

        # 2. issue every contingent's badges
        t1 = time.perf_counter()
        issued = 0
        for c in countries:
            with sessions() as s, s.begin():
                org = registry.find_organisation(s, f"POL-{c}")
                assert org is not None
                result = badges.issue_for_organisation(
                    s, site, instance.keyring, instance.settings.issuer, org, _now(), by
                )
                assert not result.skipped, result.skipped[:3]
                issued += len(result.issued)
        t_issue = time.perf_counter() - t1

        # 3. print every contingent to its A4 PDF
        t2 = time.perf_counter()
        out = args.keep or Path(tmp) / "pdf"
        out.mkdir(parents=True, exist_ok=True)
        pages = 0
        size = 0
        for c in countries:
            with sessions() as s:
                org = registry.find_organisation(s, f"POL-{c}")
                assert org is not None
                faces = organisation_faces(s, site, org, _now())
            pdf = cards.sheet_pdf(faces)
            (out / f"badges-POL-{c}.pdf").write_bytes(pdf)
            pages += -(-len(faces) // 10)
            size += len(pdf)
        t_print = time.perf_counter() - t2

    total = t_import + t_issue + t_print
    print(f"machine   {platform.node()} {platform.machine()}, Python {platform.python_version()}, {url.split(':')[0]}")
    print(f"holders   {args.holders} in {len(countries)} contingents; {issued} badges; {pages} A4 pages")
    print(f"pdf       {size / 1e6:.1f} MB in {len(countries)} files")
    print(f"import    {t_import:6.2f} s  (check + insert, {args.holders / t_import:,.0f} holders/s)")
    print(f"issue     {t_issue:6.2f} s  (sign + record + audit, {issued / t_issue:,.0f} badges/s)")
    print(f"print     {t_print:6.2f} s  (A4 sheets with photo and QR, {issued / t_print:,.0f} cards/s)")
    print(f"total     {total:6.2f} s  (target < 30 s)")
    print("          -> docs/performance.md, section 'Badge desk: batch import, issue and print'")


def _now():  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.UTC)


if __name__ == "__main__":
    main()
