"""Decoding bench: each engine (pyzbar, zxing-cpp, the pipeline) on real photos and generated turnstile scenes.

    .venv/bin/python bench/decode.py [--scenes N] [--idle N] [--quick]

It pins itself to one core (OpenCV, OpenMP and BLAS limited to one thread each) and times the decode call
on that core; the scenes are rendered by a helper process on another core, so rendering never competes with
the timed work. Sets:
- the real photos of ../shared/qr-photos (75 with a code, 25 without: falsepositives-2);
- generated turnstile scenes (readers.scenes.turnstile_conditions) with a badge token sized for a version-12
  QR code, at 1280x720 and 1920x1080; idle frames of the same cameras with no badge; and the same scenes
  with a token of the size issued before the shrink (version 14), for comparison.
Prints Markdown tables for docs/performance.md ("Decoding"): decoded, wrong, missed and time per frame for
each engine and set; what each pipeline step costs and earns; and candidate steps tried on the frames the
first pass missed, so that which steps earn their cost can be read off.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import qrcode  # noqa: E402
import zxingcpp  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from qrcode.constants import ERROR_CORRECT_M  # noqa: E402

from gateway.tokens import issue_token  # noqa: E402
from readers.decoding import (  # noqa: E402
    REGION_STEPS,
    Decoder,
    Pipeline,
    StepStats,
    invert,
    read_pyzbar,
    read_region,
    sharpen,
    to_gray,
    upscale,
)
from readers.regions import Region  # noqa: E402
from readers.scenes import Conditions, empty_scene, render_scene, turnstile_conditions  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "qr-photos"
ENGINES = ("pyzbar", "zxing", "pipeline")
DARK_ONLY = "zxing, dark codes only"  # the pipeline's first pass alone: what skipping inverted codes saves
PINNED = "DECODE_BENCH_PINNED"  # set once the bench has re-executed itself on one core
TOKEN_LENGTH = {12: 282, 14: 340}  # the shrunk token (~280 chars) and the size issued before (~340 chars)
DISTINCT_TOKENS = 16
EFFECTS = ("motion", "defocus", "glare", "low light", "cover", "jpeg")


# --- one core ------------------------------------------------------------------------------------------------


def pin_to_one_core() -> None:
    """Re-execute this script on the first allowed core, with every thread pool at one thread.

    Affinity set before exec applies to every thread the new process starts. The second allowed core, if
    any, is left for the rendering process.
    """
    if os.environ.get(PINNED):
        return
    cores = sorted(os.sched_getaffinity(0))
    env = {**os.environ, PINNED: ",".join(map(str, cores))}
    env.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    os.sched_setaffinity(0, {cores[0]})
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def cores() -> tuple[int, int | None]:
    """The timed core, and the rendering core (None: render on the timed core, between timings)."""
    allowed = [int(core) for core in os.environ[PINNED].split(",")]
    return allowed[0], (allowed[1] if len(allowed) > 1 else None)


# --- data --------------------------------------------------------------------------------------------------


def qr_version(text: str) -> int:
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
    code.add_data(text.encode())
    code.make(fit=True)
    return int(code.version)


def bench_tokens(version: int, count: int, seed: int) -> list[str]:
    """Real signed badge tokens whose QR code (level M) is exactly `version`, as near as possible to the
    token length that version stands for; the badge and holder ids are random, their length is chosen."""
    rng = np.random.default_rng(seed)
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    alphabet = list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
    tokens = []
    for _ in range(count):
        fitting = []
        for id_chars in range(4, 41):
            token = issue_token(
                key,
                issuer="PAR24",
                badge_id="".join(rng.choice(alphabet, id_chars)),
                holder_id="".join(rng.choice(alphabet, id_chars)),
                zones=["STADIUM-BOWL"],
                not_before=1_750_000_000,
                expires=1_750_086_400,
            )
            if qr_version(token) == version:
                fitting.append(token)
        if not fitting:
            raise SystemExit(f"no badge token makes a version {version} QR code with this token format")
        tokens.append(min(fitting, key=lambda token: abs(len(token) - TOKEN_LENGTH[version])))
    return tokens


@dataclass(frozen=True)
class Job:
    """One generated frame: a badge scene (token given) or an idle frame (token None)."""

    size: tuple[int, int]
    index: int
    token: str | None
    version: int


def render(job: Job) -> tuple[np.ndarray, list[str]]:
    """The frame as the decoders get it (grayscale), and the effects it shows."""
    rng = np.random.default_rng([job.index, job.size[0], job.version, job.token is None])
    conditions = turnstile_conditions(rng, job.size)
    if job.token is None:
        frame = empty_scene(job.size, conditions, rng)
    else:
        frame = render_scene(job.token, job.size, conditions, rng)
    return to_gray(frame), effects(conditions)


def effects(conditions: Conditions) -> list[str]:
    shown = (
        conditions.motion_px > 0,
        conditions.defocus > 0,
        conditions.glare > 0,
        conditions.light < 1,
        conditions.cover > 0,
        conditions.jpeg_quality > 0,
    )
    return [name for name, on in zip(EFFECTS, shown, strict=True) if on]


def _render_process_init(core: int) -> None:
    os.sched_setaffinity(0, {core})
    cv2.setNumThreads(1)


def rendered(jobs: list[Job], core: int | None) -> Iterator[tuple[np.ndarray, list[str]]]:
    if core is None:
        yield from map(render, jobs)
        return
    with mp.get_context("fork").Pool(1, initializer=_render_process_init, initargs=(core,)) as pool:
        yield from pool.imap(render, jobs, chunksize=4)


def photos() -> tuple[list[tuple[str, np.ndarray, str]], list[tuple[str, np.ndarray]]]:
    """(name, gray, expected text) for the photos with a code; (name, gray) for those without."""
    if not PHOTOS.is_dir():
        raise SystemExit(f"the photo set is missing: {PHOTOS} (see ../shared/qr-photos/README.md)")
    with_code = []
    for path in sorted(glob.glob(str(PHOTOS / "qrcode-*" / "*"))):
        image = Path(path)
        if image.suffix not in (".png", ".jpg"):
            continue
        expected = image.with_suffix(".txt").read_bytes().decode("utf-8")
        with_code.append((f"{image.parent.name}/{image.name}", _gray(image), expected))
    without = [(f"falsepositives-2/{p.name}", _gray(p)) for p in sorted((PHOTOS / "falsepositives-2").glob("*.png"))]
    return with_code, without


def _gray(path: Path) -> np.ndarray:
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise SystemExit(f"cannot read {path}")
    return to_gray(frame)


# --- scoring -----------------------------------------------------------------------------------------------


@dataclass
class Score:
    frames: int = 0
    decoded: int = 0
    wrong: int = 0
    missed: int = 0
    times_ms: list[float] = field(default_factory=list)
    exact: set[str] = field(default_factory=set)  # labels of the frames read exactly

    def add(self, label: str, texts: list[str], expected: str | None, seconds: float) -> bool:
        """Record one frame; True when it was read exactly (or, with no code, when nothing was read)."""
        self.frames += 1
        self.times_ms.append(seconds * 1000)
        if expected is None:
            self.wrong += bool(texts)
            return not texts
        if texts == [expected]:
            self.decoded += 1
            self.exact.add(label)
            return True
        if texts:
            self.wrong += 1
        else:
            self.missed += 1
        return False

    def median(self) -> float:
        return statistics.median(self.times_ms)

    def p95(self) -> float:
        return float(np.percentile(self.times_ms, 95))


@dataclass
class SetResult:
    name: str
    has_code: bool
    scores: dict[str, Score]
    step_stats: dict[str, StepStats]
    pipeline_misses: list[str] = field(default_factory=list)


@dataclass
class Leftovers:
    """What the candidate-step analysis needs: the regions of frames whose first pass read nothing."""

    missed: list[tuple[list[np.ndarray], str]] = field(default_factory=list)  # region crops, expected text
    idle_crops: list[np.ndarray] = field(default_factory=list)
    idle_frames: int = 0
    idle_whole: list[np.ndarray] = field(default_factory=list)  # a few whole idle 1280x720 frames


class Bench:
    def __init__(self) -> None:
        self.decoders: dict[str, Callable[[np.ndarray], list[str]]] = {
            "pyzbar": Decoder("pyzbar").decode,
            "zxing": Decoder("zxing").decode,
            DARK_ONLY: read_region,
        }
        self.leftovers = Leftovers()

    def score(
        self,
        name: str,
        frames: Iterable[tuple[np.ndarray, str | None, str]],
        total: int,
        *,
        analyse: int = 0,
    ) -> SetResult:
        """Run every engine on every frame (gray image, expected text or None, a label for misses).

        `analyse`: keep the fallback regions of this many frames for the candidate analysis.
        """
        has_code = False
        stats: dict[str, StepStats] = {}
        pipeline = Pipeline(stats=stats)
        engines: dict[str, Callable[[np.ndarray], list[str]]] = {**self.decoders, "pipeline": pipeline}
        result = SetResult(name, False, {engine: Score() for engine in engines}, stats)
        progress = Progress(name, total)
        for count, (gray, expected, label) in enumerate(frames, start=1):
            has_code = has_code or expected is not None
            for engine, read in engines.items():
                started = time.perf_counter()
                texts = read(gray)
                elapsed = time.perf_counter() - started
                ok = result.scores[engine].add(label, texts, expected, elapsed)
                if engine == "pipeline" and not ok:
                    result.pipeline_misses.append(f"{label}: {texts!r:.60}" if texts else label)
            if count <= analyse:
                self._keep_leftovers(gray, expected)
                self.leftovers.idle_frames += expected is None
            progress.show(count)
        progress.done()
        result.has_code = has_code
        return result

    def _keep_leftovers(self, gray: np.ndarray, expected: str | None) -> None:
        """Untimed: the regions the fallbacks examine, for the candidate analysis."""
        results = Pipeline.first_pass(gray)
        if any(result.valid for result in results):
            return
        crops = [_crop(gray, region) for region in Pipeline().regions(gray, results)]
        if expected is None:
            self.leftovers.idle_crops.extend(crops)
            if gray.shape == (720, 1280) and len(self.leftovers.idle_whole) < 50:
                self.leftovers.idle_whole.append(gray)
        else:
            self.leftovers.missed.append((crops, expected))


def _crop(gray: np.ndarray, region: Region) -> np.ndarray:
    return np.ascontiguousarray(gray[region.y0 : region.y1, region.x0 : region.x1])


class Progress:
    """A one-line progress bar on stderr (a line per set when stderr is not a terminal)."""

    def __init__(self, name: str, total: int) -> None:
        self.name, self.total = name, total
        self.started = time.monotonic()
        self.live = sys.stderr.isatty()

    def show(self, count: int) -> None:
        if self.live and (count == self.total or count % 5 == 0):
            filled = int(30 * count / self.total)
            sys.stderr.write(f"\r{self.name:<32} [{'#' * filled}{'.' * (30 - filled)}] {count}/{self.total}")
            sys.stderr.flush()

    def done(self) -> None:
        elapsed = time.monotonic() - self.started
        sys.stderr.write(f"{'' if self.live else self.name}  done in {elapsed:.0f} s\n")
        sys.stderr.flush()


# --- candidate steps ---------------------------------------------------------------------------------------


def _pyzbar_upscaled(crop: np.ndarray) -> list[str]:
    return read_pyzbar(upscale(1.5)(crop))


def _global_histogram(crop: np.ndarray) -> list[str]:
    found = zxingcpp.read_barcodes(
        crop,
        formats=zxingcpp.BarcodeFormats((zxingcpp.BarcodeFormat.QRCodeModel1, zxingcpp.BarcodeFormat.QRCodeModel2)),
        binarizer=zxingcpp.Binarizer.GlobalHistogram,
        try_invert=False,
        text_mode=zxingcpp.TextMode.Plain,
    )
    return sorted({result.text for result in found})


def _clahe(crop: np.ndarray) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(crop)


def _stretch(crop: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.normalize(crop, np.empty_like(crop), 0, 255, cv2.NORM_MINMAX))


def _prepared(prepare: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], list[str]]:
    return lambda crop: read_region(prepare(crop))


KEPT = [(name, _prepared(prepare)) for name, prepare in REGION_STEPS]
CANDIDATES: list[tuple[str, Callable[[np.ndarray], list[str]]]] = [
    ("region as is", read_region),
    ("upscale 1.5x", _prepared(upscale(1.5))),
    ("sharpen", _prepared(sharpen(2.0, 2.0))),
    ("upscale 2x + sharpen", _prepared(lambda crop: sharpen(1.5, 2.0)(upscale(2.0)(crop)))),
    ("median 3x3 (denoise)", _prepared(lambda crop: cv2.medianBlur(crop, 3))),
    ("contrast: CLAHE", _prepared(_clahe)),
    ("contrast: stretch", _prepared(_stretch)),
    ("invert", _prepared(invert)),
    ("zxing global-histogram binarizer", _global_histogram),
    ("pyzbar", read_pyzbar),
    ("pyzbar, upscale 1.5x", _pyzbar_upscaled),
]


def whole_frame_ms(read: Callable[[np.ndarray], list[str]], frames: list[np.ndarray]) -> float:
    times = []
    for frame in frames:
        started = time.perf_counter()
        read(frame)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times) if times else float("nan")


def candidate_table(leftovers: Leftovers) -> list[str]:
    """For each step: how many first-pass misses it reads on its own, how many no kept step reads, and
    what it costs per region on those frames and on idle frames."""
    kept_names = {name for name, _ in KEPT}
    reads: dict[str, set[int]] = {}
    cost: dict[str, tuple[float, float]] = {}
    steps = [*KEPT, *[(n, r) for n, r in CANDIDATES if n not in kept_names]]
    progress = Progress("candidate steps", len(steps))
    for number, (name, read) in enumerate(steps, start=1):
        hits: set[int] = set()
        seconds = 0.0
        regions = 0
        for frame, (crops, expected) in enumerate(leftovers.missed):
            for crop in crops:
                started = time.perf_counter()
                texts = read(crop)
                seconds += time.perf_counter() - started
                regions += 1
                if texts == [expected]:
                    hits.add(frame)
                    break
        idle_seconds = 0.0
        for crop in leftovers.idle_crops:
            started = time.perf_counter()
            read(crop)
            idle_seconds += time.perf_counter() - started
        reads[name] = hits
        cost[name] = (seconds / max(regions, 1), idle_seconds / max(leftovers.idle_frames, 1))
        progress.show(number)
    progress.done()
    by_kept = set().union(*(reads[name] for name, _ in KEPT))
    rows = [
        f"Frames whose first zxing-cpp pass read nothing: {len(leftovers.missed)} (badge scenes); "
        f"{leftovers.idle_frames} idle frames with {len(leftovers.idle_crops)} regions between them.",
        "",
        "| step | kept | reads | only it | ms per region (badge frames) | ms per idle frame |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, _ in steps:
        kept = name in kept_names
        others = set().union(*(reads[n] for n, _ in KEPT if n != name)) if kept else by_kept
        only = len(reads[name] - others)
        per_region, per_idle = cost[name]
        rows.append(
            f"| {name} | {'yes' if kept else 'no'} | {len(reads[name])} | {only} | "
            f"{per_region * 1000:.2f} | {per_idle * 1000:.2f} |"
        )
    rows.append("")
    rows.append(
        f"The kept steps run on the whole frame instead of on regions, median over {len(leftovers.idle_whole)} "
        "idle 1280x720 frames: "
        + ", ".join(f"{name} {whole_frame_ms(read, leftovers.idle_whole):.2f} ms" for name, read in KEPT)
        + "."
    )
    rows.append("")
    rows.append(
        "reads: first-pass misses this step reads alone; only it: of those, how many no kept step reads "
        "(for a kept step: no other kept step); ms per idle frame: the step run on every region of an idle frame."
    )
    return rows


# --- report ------------------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    timed, render_core = cores()
    package = importlib.metadata.version
    where = f"core {timed}" + (f", scenes rendered on core {render_core}" if render_core is not None else "")
    return (
        f"{model}, {os.cpu_count()} cores; decoding pinned to {where}; Python {platform.python_version()}, "
        f"OpenCV {cv2.__version__}, zxing-cpp {package('zxing-cpp')}, pyzbar {package('pyzbar')}, "
        f"numpy {np.__version__}"
    )


def results_table(results: list[SetResult]) -> list[str]:
    rows = [
        "| set | frames | engine | decoded | wrong | missed | median ms | p95 ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for engine in ENGINES:
            score = result.scores[engine]
            decoded = f"{score.decoded} ({100 * score.decoded / score.frames:.1f}%)" if result.has_code else "-"
            missed = str(score.missed) if result.has_code else "-"
            rows.append(
                f"| {result.name} | {score.frames} | {engine} | {decoded} | {score.wrong} | {missed} | "
                f"{score.median():.2f} | {score.p95():.2f} |"
            )
    return rows


def first_pass_table(results: list[SetResult]) -> list[str]:
    """zxing-cpp's default search against the pipeline's first pass (no inverted codes)."""
    rows = [
        "| set | zxing decoded | dark only decoded | zxing median / p95 ms | dark only median / p95 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        full, dark = result.scores["zxing"], result.scores[DARK_ONLY]
        decoded = (str(full.decoded), str(dark.decoded)) if result.has_code else ("-", "-")
        rows.append(
            f"| {result.name} | {decoded[0]} | {decoded[1]} | {full.median():.2f} / {full.p95():.2f} | "
            f"{dark.median():.2f} / {dark.p95():.2f} |"
        )
    return rows


def steps_table(results: list[SetResult]) -> list[str]:
    rows = [
        "| set | step | runs | reads | mean ms per run | ms per frame |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        frames = result.scores["pipeline"].frames
        for name, step in result.step_stats.items():
            rows.append(
                f"| {result.name} | {name} | {step.runs} | {step.reads} | "
                f"{1000 * step.seconds / max(step.runs, 1):.2f} | {1000 * step.seconds / frames:.2f} |"
            )
    return rows


def targets(results: dict[str, SetResult], photo_exact: dict[str, set[str]]) -> list[str]:
    lines = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"- [{'x' if ok else ' '}] {text}")

    lost = photo_exact["zxing"] - photo_exact["pipeline"]
    check(not lost, f"photos: the pipeline reads every photo zxing-cpp reads (missing: {sorted(lost) or 'none'})")
    false_reads = results["photos without a code"].scores["pipeline"].wrong
    check(false_reads == 0, f"falsepositives-2: no false decode by the pipeline ({false_reads})")
    for name, result in results.items():
        if name.startswith("scenes") and "v12" in name:
            score = result.scores["pipeline"]
            rate = score.decoded / score.frames
            check(rate >= 0.995, f"{name}: {100 * rate:.2f}% decoded by the pipeline (target 99.5%)")
    for name, result in results.items():
        if "1280x720" in name and "v14" not in name:
            median = result.scores["pipeline"].median()
            check(median < 15, f"{name}: pipeline median {median:.2f} ms per frame (target under 15 ms)")
    return lines


def to_gray_ms(size: tuple[int, int]) -> float:
    """Median time of the BGR-to-gray conversion the reader does before decoding."""
    frame = empty_scene(size, Conditions(), np.random.default_rng(0))
    times = []
    for _ in range(200):
        started = time.perf_counter()
        to_gray(frame)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=1000, help="badge scenes per size for the version-12 token")
    parser.add_argument("--idle", type=int, default=300, help="idle frames per size")
    parser.add_argument("--quick", action="store_true", help="a tenth of the frames, to try the bench out")
    args = parser.parse_args()
    pin_to_one_core()
    cv2.setNumThreads(1)
    scenes, idle = (max(args.scenes // 10, 10), max(args.idle // 10, 10)) if args.quick else (args.scenes, args.idle)
    _timed_core, render_core = cores()

    bench = Bench()
    with_code, without = photos()
    results: list[SetResult] = [
        bench.score("photos with a code", ((g, text, name) for name, g, text in with_code), len(with_code)),
        bench.score("photos without a code", ((g, None, name) for name, g in without), len(without)),
    ]
    photo_exact = {engine: results[0].scores[engine].exact for engine in ("zxing", "pipeline")}

    tokens = {version: bench_tokens(version, DISTINCT_TOKENS, seed=version) for version in (12, 14)}
    plan: list[tuple[str, tuple[int, int], int, int, bool]] = [
        ("scenes 1280x720 v12", (1280, 720), 12, scenes, True),
        ("scenes 1920x1080 v12", (1920, 1080), 12, scenes, True),
        ("idle 1280x720", (1280, 720), 12, idle, False),
        ("idle 1920x1080", (1920, 1080), 12, idle, False),
        ("scenes 1280x720 v14", (1280, 720), 14, scenes // 2, True),
        ("scenes 1920x1080 v14", (1920, 1080), 14, scenes // 2, True),
    ]
    for name, size, version, count, badge in plan:
        jobs = [
            Job(size, index, tokens[version][index % DISTINCT_TOKENS] if badge else None, version)
            for index in range(count)
        ]
        frames = (
            (gray, job.token, f"{name} #{job.index} ({', '.join(shown) or 'pose only'})")
            for job, (gray, shown) in zip(jobs, rendered(jobs, render_core), strict=True)
        )
        results.append(bench.score(name, frames, count, analyse=count if badge else min(count, 100)))

    by_name = {result.name: result for result in results}
    conversion = {size: to_gray_ms(size) for size in ((1280, 720), (1920, 1080))}
    print("# Decoding bench\n")
    print(f"Machine: {machine()}.")
    print(
        f"Badge tokens: {len(tokens[12][0])} characters (QR version {qr_version(tokens[12][0])}, level M) and "
        f"{len(tokens[14][0])} characters (version {qr_version(tokens[14][0])}); time is the decode call on a "
        "grayscale frame; converting the camera's BGR frame to gray first adds "
        + " and ".join(f"{ms:.2f} ms at {w}x{h}" for (w, h), ms in conversion.items())
        + " (median).\n"
    )
    print("\n".join(results_table(results)))
    print(f"\n## First pass: zxing-cpp with and without its search for inverted codes ({DARK_ONLY!r})\n")
    print("\n".join(first_pass_table(results)))
    print("\n## Pipeline steps (reads: frames a step read after the steps before it read nothing)\n")
    print("\n".join(steps_table([r for r in results if not r.name.startswith("photos")])))
    print("\n## Candidate steps on the regions of frames the first pass missed\n")
    print("\n".join(candidate_table(bench.leftovers)))
    print("\n## Frames the pipeline missed or misread\n")
    for result in results:
        for line in result.pipeline_misses:
            print(f"- {line}")
    print("\n## Targets\n")
    print("\n".join(targets(by_name, photo_exact)))


if __name__ == "__main__":
    main()
