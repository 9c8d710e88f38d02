"""The gate page over HTTP: the standard library's threading server, Jinja2 templates with autoescaping.

Bound to 127.0.0.1 by default (the guard's screen beside the turnstile). Every form carries a per-session CSRF
token; every POST ends in a redirect (a reload never repeats a decision) except the look-up, which changes
nothing. Pages say no-store and allow no script, no frame and no outside resource (photos are data: URLs).
"""

from __future__ import annotations

import hmac
import http.server
import logging
import re
import secrets
import threading
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from gateway import contract
from readers.gate_page import GatePost, OnDuty, Result

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates" / "gate_page"
COOKIE = "gate_page"
MAX_BODY = 8 * 1024
IDLE_CHECK_S = 5.0
MAX_BROWSERS = 32  # page sessions kept; the oldest is forgotten first
_HOLDER = re.compile(r"^/holder/([A-Za-z0-9_-]{1,40})\Z")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class Browser:
    """One browser's page session: its CSRF token and what to show after the next redirect."""

    id: str
    csrf: str
    flash: str = ""
    results: dict[str, Result] = field(default_factory=dict)  # holder id -> the last manual decision on them


class GatePageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], post: GatePost) -> None:
        super().__init__(address, _Handler)
        self.post = post
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
        self._browsers: OrderedDict[str, Browser] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="gate-page", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch_idle, name="gate-page-idle", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        self.shutdown()
        self.server_close()

    def _watch_idle(self) -> None:
        # A guard who walked away without touching the page is logged out all the same.
        while not self._stopped.wait(IDLE_CHECK_S):
            self.post.expire_idle()

    def browser(self, cookie_id: str | None) -> tuple[Browser, bool]:
        """The page session of this cookie, or a new one (True when new: the cookie must be set)."""
        with self._lock:
            if cookie_id and cookie_id in self._browsers:
                self._browsers.move_to_end(cookie_id)
                return self._browsers[cookie_id], False
            browser = Browser(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
            self._browsers[browser.id] = browser
            while len(self._browsers) > MAX_BROWSERS:
                self._browsers.popitem(last=False)
            return browser, True


class _Handler(http.server.BaseHTTPRequestHandler):
    server: GatePageServer
    server_version = "gate-page"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("gate page: " + format, *args)

    # --- plumbing ------------------------------------------------------------------------------------------

    def _session(self) -> tuple[Browser, bool]:
        cookie = self.headers.get("Cookie", "")
        value = None
        for part in cookie.split(";"):
            name, _, v = part.strip().partition("=")
            if name == COOKIE:
                value = v
        return self.server.browser(value)

    def _send(self, status: HTTPStatus, body: bytes, browser: Browser, new: bool, location: str = "") -> None:
        self.send_response(status)
        for name, value in HEADERS.items():
            self.send_header(name, value)
        if new:
            self.send_header("Set-Cookie", f"{COOKIE}={browser.id}; HttpOnly; SameSite=Strict; Path=/")
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _render(self, template: str, browser: Browser, new: bool, status: HTTPStatus = HTTPStatus.OK,
                **context: Any) -> None:
        post = self.server.post
        flash, browser.flash = browser.flash, ""
        html = self.server.env.get_template(template).render(
            csrf=browser.csrf,
            flash=flash,
            reader=post.reader,
            gate=post.gate,
            force_reasons=contract.FORCE_REASONS,
            **context,
        )
        self._send(status, html.encode(), browser, new)

    def _redirect(self, browser: Browser, new: bool, location: str) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", browser, new, location)

    def _form(self) -> dict[str, str] | None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return None
        if not 0 <= length <= MAX_BODY:
            return None
        raw = self.rfile.read(length).decode("utf-8", "replace")
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw, max_num_fields=16).items()}

    # --- pages ---------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        browser, new = self._session()
        post = self.server.post
        path = urllib.parse.urlsplit(self.path).path
        duty = post.guard_for(browser.id)
        if path == "/":
            if duty is None:
                self._render("login.html", browser, new, scan_armed=post.scan_armed, scanned=post.scanned_badge)
            else:
                self._render("gate.html", browser, new, duty=duty, last=post.last)
            return
        match = _HOLDER.match(path)
        if match and duty is not None:
            result = post.card(duty, match.group(1))
            if result.error:
                browser.flash = result.error
                self._redirect(browser, new, "/")
                return
            decided = browser.results.pop(match.group(1), None)
            self._render("holder.html", browser, new, duty=duty, card=result.card, result=decided)
            return
        if match:
            self._redirect(browser, new, "/")
            return
        self._render("error.html", browser, new, HTTPStatus.NOT_FOUND, message="No such page.")

    def do_POST(self) -> None:
        browser, new = self._session()
        form = self._form()
        if form is None or not hmac.compare_digest(form.get("csrf", ""), browser.csrf):
            self._render("error.html", browser, new, HTTPStatus.FORBIDDEN,
                         message="This form has expired: go back to the gate page and try again.")
            return
        post = self.server.post
        path = urllib.parse.urlsplit(self.path).path
        if path == "/login":
            browser.flash = post.login(browser.id, form.get("badge", "").strip(), form.get("pin", "").strip())
            self._redirect(browser, new, "/")
            return
        if path == "/scan":
            post.arm_badge_scan()
            self._redirect(browser, new, "/")
            return
        duty = post.guard_for(browser.id)
        if duty is None:
            browser.flash = "Log in first."
            self._redirect(browser, new, "/")
            return
        if path == "/leave":
            post.leave(browser.id)
            browser.flash = "You have left the post."
            self._redirect(browser, new, "/")
        elif path == "/lookup":
            query = form.get("query", "").strip()
            result = post.lookup(duty, query) if query else Result(error="Type a name, badge number or organisation.")
            self._render("lookup.html", browser, new, duty=duty, query=query, result=result)
        elif path in ("/decide", "/force"):
            self._manual(browser, new, duty, form, forcing=path == "/force")
        else:
            self._render("error.html", browser, new, HTTPStatus.NOT_FOUND, message="No such page.")

    def _manual(self, browser: Browser, new: bool, duty: OnDuty, form: dict[str, str], forcing: bool) -> None:
        holder = form.get("holder", "")
        if not _HOLDER.match(f"/holder/{holder}"):
            self._render("error.html", browser, new, HTTPStatus.BAD_REQUEST, message="No holder chosen.")
            return
        post = self.server.post
        if forcing:
            why = form.get("why", "")
            if why not in contract.FORCE_REASONS:
                browser.flash = "Choose a reason from the list."
                self._redirect(browser, new, f"/holder/{holder}")
                return
            result = post.decide(duty, holder, why=why, note=form.get("note", ""))
        else:
            result = post.decide(duty, holder)
        if result.error:
            browser.flash = result.error
        else:
            browser.results[holder] = result
        self._redirect(browser, new, f"/holder/{holder}")


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, or PORT (or :PORT) on 127.0.0.1."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"expected HOST:PORT, got {text!r}") from None
    if not 0 <= number < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return (host.strip("[]") or "127.0.0.1", number)
