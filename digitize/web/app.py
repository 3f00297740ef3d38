"""The review station's web application: queue, item pages, previews and actions, behind a sign-in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import jinja2
import pikepdf
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from digitize import review as manual
from digitize.drop import DROPPABLE, check_folder
from digitize.storage import Store, key_problem
from digitize.web import words
from digitize.web.users import Role, User, check_password, current
from pipeline._exec import pdftoppm
from pipeline.errors import DigitizeError
from digitize.config import AppSettings
from pipeline.signing import RecordSigner

T = TypeVar("T")
SESSION_COOKIE = "review_session"
LANG_COOKIE = "review_lang"
# Uploads are read in pieces of this size, so one larger than limits.max_input_bytes is cut off early.
CHUNK = 1 << 20
# A form's text fields (notes, page numbers, codes) are small; only a rescan upload is large.
MAX_TEXT_FIELD = 64 * 1024
# One review action at a time in this process: two clerks acting on the same dossier at once
# would each re-assemble it from the same copy, and the later would undo the earlier.
ACTIONS = threading.Lock()


class Refused(Exception):
    """A POST without this session's CSRF token, or from no session: answered 403."""


@dataclass(frozen=True)
class Stores:
    review: Store
    archive: Store
    inbox: Store


class _Sessions:
    """Signed cookies holding the user, their role, a CSRF token and an expiry; the key lives in this process."""

    def __init__(self, *, hours: float) -> None:
        self._key = secrets.token_bytes(32)
        self._seconds = hours * 3600

    def _sign(self, body: bytes) -> str:
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def make(self, user: User | None) -> tuple[str, dict]:
        data = {"user": user.name if user else None, "role": user.role.value if user else None,
                "csrf": secrets.token_urlsafe(24), "exp": time.time() + self._seconds}  # fmt: skip
        body = base64.urlsafe_b64encode(json.dumps(data).encode())
        return f"{body.decode()}.{self._sign(body)}", data

    def read(self, cookie: str | None) -> dict | None:
        if not cookie or "." not in cookie:
            return None
        body, _, signature = cookie.partition(".")
        if not hmac.compare_digest(self._sign(body.encode()).encode(), signature.encode("utf-8", "replace")):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body.encode()))
        except ValueError:
            return None
        return data if data.get("exp", 0) > time.time() else None


class _Previews:
    """Page images rendered from an item's PDF with pdftoppm, cached by the PDF's checksum."""

    def __init__(self, review: Store, *, width: int, timeout: float) -> None:
        self.review, self.width, self.timeout = review, width, timeout
        self.folder = Path(tempfile.mkdtemp(prefix="digitize-previews-"))
        self._lock = threading.Lock()

    def page(self, item: manual.ReviewItem, manifest: dict, number: int) -> Path:
        sha = manifest["output"]["pdf_sha256"]
        out = self.folder / f"{sha}-{number}-{self.width}.png"
        with self._lock:
            if out.exists():
                return out
            pdf = self.folder / f"{sha}.pdf"
            if not pdf.exists():
                self.review.download(f"{item.prefix}{item.name}.pdf", self.folder / f"{sha}.part")
                (self.folder / f"{sha}.part").replace(pdf)
            with pikepdf.open(pdf) as doc:
                if not 1 <= number <= len(doc.pages):
                    raise manual.ReviewError(f"{item.name}: no page {number}")
                page = doc.pages[number - 1]
                box = page.mediabox
                width_pt, height_pt = float(box[2] - box[0]), float(box[3] - box[1])
                if int(page.obj.get("/Rotate", 0)) % 180:
                    width_pt = height_pt
            dpi = max(36, math.ceil(self.width * 72 / width_pt))
            image = pdftoppm.rasterize(pdf, page=number - 1, dpi=dpi, timeout=self.timeout)
            if image.width > self.width:
                image = image.resize((self.width, round(image.height * self.width / image.width)))
            tmp = out.with_suffix(".tmp")
            image.save(tmp, format="PNG")
            tmp.replace(out)
        return out

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _templates() -> jinja2.Environment:
    folder = files("digitize.web") / "templates"
    loader = jinja2.DictLoader({p.name: p.read_text("utf-8") for p in folder.iterdir() if p.name.endswith(".html")})
    return jinja2.Environment(loader=loader, autoescape=True)


def _age(since: datetime, lang: str) -> str:
    seconds = (datetime.now(timezone.utc) - since).total_seconds()
    if seconds >= 86400:
        return f"{seconds / 86400:.0f} {words.label('days', lang)}"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} {words.label('hours', lang)}"
    return f"{max(seconds, 0) / 60:.0f} {words.label('minutes', lang)}"


def _numbers(raw: str) -> list[int]:
    try:
        return [int(p) for p in raw.replace(" ", "").split(",") if p]
    except ValueError:
        raise manual.ReviewError(f"{raw!r}: expected page numbers like 2,3") from None


def create_app(
    settings: AppSettings, *, stores: Stores, users_file: Path, signer: Callable[[], RecordSigner | None],
) -> FastAPI:
    """The station over these stores; `signer` gives the agency's signer for re-assembled records."""
    sessions = _Sessions(hours=settings.review.session_hours)
    previews = _Previews(stores.review, width=settings.review.preview_width, timeout=settings.limits.rasterize_timeout_s)
    templates = _templates()
    css = (files("digitize.web") / "static" / "station.css").read_text("utf-8")
    app = FastAPI(title="digitize review station", docs_url=None, redoc_url=None, openapi_url=None)
    app.router.on_shutdown.append(previews.close)

    def lang_of(request: Request) -> str:
        lang = request.cookies.get(LANG_COOKIE, "vi")
        return lang if lang in words.LANGUAGES else "vi"

    def who(request: Request) -> tuple[User | None, dict | None]:
        """The signed-in user (cookie session or HTTP Basic), and the session when there is one."""
        session = sessions.read(request.cookies.get(SESSION_COOKIE))
        if session and session.get("user"):
            return current(users_file, session["user"]), session
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return None, session
            return check_password(users_file, name, password), None
        return None, session

    def page(request: Request, template: str, status: int = 200, **context: object) -> HTMLResponse:
        lang = lang_of(request)
        user, session = who(request)
        html = templates.get_template(template).render(
            t=lambda key: words.label(key, lang), lang=lang, user=user, csrf=session["csrf"] if session else "",
            css=css, flag_name=lambda f: words.flag_name(f, lang), action_words=lambda a: words.action_words(a, lang),
            **context,
        )  # fmt: skip
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def anonymous(request: Request) -> Response:
        if request.headers.get("authorization") or request.url.path.startswith("/api/") or request.url.path == "/preview":
            return Response("sign-in required\n", status_code=401, headers={"WWW-Authenticate": 'Basic realm="review station"'})
        return RedirectResponse("/login", status_code=303)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    def set_session(response: Response, cookie: str) -> Response:
        response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="strict", max_age=int(settings.review.session_hours * 3600))
        return response

    @app.get("/login")
    def login_form(request: Request) -> Response:
        session = sessions.read(request.cookies.get(SESSION_COOKIE))
        if session and session.get("user"):
            return RedirectResponse("/", status_code=303)
        cookie, data = sessions.make(None)
        lang = lang_of(request)
        html = templates.get_template("login.html").render(
            t=lambda key: words.label(key, lang), lang=lang, user=None, csrf=data["csrf"], css=css, failed=False
        )
        return set_session(HTMLResponse(html, headers={"Cache-Control": "no-store"}), cookie)

    async def checked_form(request: Request) -> tuple[dict, dict]:
        """The form of a POST, refused (403) unless it carries this session's CSRF token.

        Nothing is read before the session is known and the body's declared size is within
        limits.max_input_bytes, so no one can fill memory or disk without signing in."""
        session = sessions.read(request.cookies.get(SESSION_COOKIE))
        if not session:
            raise Refused("no session: open the page again")
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > settings.limits.max_input_bytes + MAX_TEXT_FIELD:
            raise Refused(f"a form's body must declare its size, at most limits.max_input_bytes ({settings.limits.max_input_bytes})")
        form = await request.form(max_part_size=MAX_TEXT_FIELD)
        token = form.get("csrf")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), session["csrf"].encode()):
            raise Refused("CSRF token missing or wrong")
        return form, session

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Exception) -> Response:
        return Response(f"refused: {exc}\n", status_code=403)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form, _ = await checked_form(request)
        user = check_password(users_file, str(form.get("user", "")), str(form.get("password", "")))
        if user is None:
            cookie, data = sessions.make(None)
            lang = lang_of(request)
            html = templates.get_template("login.html").render(
                t=lambda key: words.label(key, lang), lang=lang, user=None, csrf=data["csrf"], css=css, failed=True
            )
            return set_session(HTMLResponse(html, status_code=401), cookie)
        cookie, _ = sessions.make(user)  # a new session, so a token seen before sign-in is worth nothing after
        return set_session(RedirectResponse("/", status_code=303), cookie)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await checked_form(request)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/lang/{lang}")
    def choose_language(lang: str, request: Request) -> Response:
        # Back to the page the choice was made on, on this station only (never another site).
        referer = urlsplit(request.headers.get("referer") or "/")
        same_site = not referer.netloc or referer.netloc == request.url.netloc
        back = (referer.path or "/") + (f"?{referer.query}" if referer.query else "") if same_site else "/"
        response = RedirectResponse(back if back.startswith("/") and not back.startswith("//") else "/", status_code=303)
        if lang in words.LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, samesite="lax", max_age=365 * 86400)
        return response

    def queue_rows(items: list[manual.ReviewItem], lang: str, *, station: str, flag: str, sort: str) -> list[dict]:
        rows = []
        for item in (i for i in items if (not station or i.station == station) and (not flag or flag in i.flags)):
            manifest = json.loads(stores.review.read_bytes(f"{item.prefix}{item.name}.json"))
            since = stores.review.stat(item.prefix + manual.REVIEW_ITEM)
            reasons = [
                words.flag_words(f, ev, lang, page=manual.dossier_page(manifest, ev)) for f, evs in item.flags.items() for ev in evs
            ]
            rows.append({
                "item": item, "pages": _page_count(manifest), "reasons": reasons,
                "since": since.modified if since else datetime.now(timezone.utc),
            })  # fmt: skip
        key = {"station": lambda r: (r["item"].station, r["since"]), "pages": lambda r: -r["pages"]}.get(sort, lambda r: r["since"])
        rows.sort(key=key)
        for row in rows:
            row["age"] = _age(row["since"], lang)
        return rows

    @app.get("/")
    def queue(request: Request, station: str = "", flag: str = "", sort: str = "age", done: str = "", tab: str = "items") -> Response:
        user, _ = who(request)
        if user is None:
            return anonymous(request)
        lang = lang_of(request)
        everything = manual.list_items(stores.review)
        rows = queue_rows(everything, lang, station=station, flag=flag, sort=sort)
        quarantined = [
            {"entry": q, "age": _age(q.at, lang)} for q in manual.list_quarantine(stores.review)
        ]
        return page(
            request, "queue.html", rows=rows, quarantined=quarantined, tab=tab, station=station, flag=flag, sort=sort, done=done,
            stations=sorted({i.station for i in everything}), flags=sorted({f for i in everything for f in i.flags}),
        )  # fmt: skip

    @app.get("/api/queue")
    def api_queue(request: Request) -> Response:
        user, _ = who(request)
        if user is None:
            return anonymous(request)
        items = [{"item": i.prefix, "name": i.name, "code": i.code, "station": i.station, "flags": sorted(i.flags)}
                 for i in manual.list_items(stores.review)]  # fmt: skip
        quarantine = [{"input": q.key, "station": q.station, "reason": q.reason} for q in manual.list_quarantine(stores.review)]
        return JSONResponse({"items": items, "quarantine": quarantine})

    def find_item(prefix: str) -> manual.ReviewItem:
        # A browser's value is only ever compared with listed keys, never joined into a path.
        problem = key_problem(prefix)
        if problem:
            raise manual.ReviewError(f"unsafe item name: {problem}")
        return manual.item_at(stores.review, prefix)

    @app.exception_handler(DigitizeError)
    async def digitize_error(request: Request, exc: DigitizeError) -> Response:
        user, _ = who(request)
        if user is None:
            return anonymous(request)
        return page(request, "error.html", status=400 if exc.permanent else 503, message=str(exc))

    @app.get("/item")
    def item_page(request: Request, p: str, done: str = "") -> Response:
        user, _ = who(request)
        if user is None:
            return anonymous(request)
        lang = lang_of(request)
        item = find_item(p)
        manifest = json.loads(stores.review.read_bytes(f"{item.prefix}{item.name}.json"))
        count = _page_count(manifest)
        text_key = f"{item.prefix}{item.name}.txt"
        texts = stores.review.read_bytes(text_key).decode("utf-8").rstrip("\n").split("\f") if stores.review.exists(text_key) else []
        page_records = [r for r in manifest.get("pages", []) if r.get("in_pdf")]
        if len(page_records) != count or manifest.get("replacements") or manifest.get("split_from"):
            page_records = []  # pages were replaced or moved: the night's page facts no longer line up
        by_page: dict[int, list[str]] = {}
        general = []
        for flag, evidence in item.flags.items():
            for ev in evidence:
                number = manual.dossier_page(manifest, ev)
                text = words.flag_words(flag, ev, lang, page=None)
                (by_page.setdefault(number, []) if number else general).append(text)
        pages = []
        for n in range(1, count + 1):
            facts = page_records[n - 1] if page_records else {}
            # The night's picture of a flagged page with its measured evidence drawn over it.
            evidence = item.thumbnails.get(str(facts["source_index"])) if facts else None
            pages.append({"number": n, "text": texts[n - 1] if n - 1 < len(texts) else "", "flags": by_page.get(n, []),
                          "facts": facts, "evidence": evidence})
        actions = [
            json.loads(stores.review.read_bytes(o.key)) for o in stores.review.list(item.prefix + manual.ACTIONS) if o.key.endswith(".json")
        ]
        provenance = manifest.get("source", {}).get("provenance", {})
        return page(
            request, "item.html", item=item, manifest=manifest, pages=pages, general=general, actions=actions,
            provenance=provenance, done=done, code_pattern=settings.split.code_pattern,
            resolved=[words.flag_name(r.get("flag", ""), lang) for r in item.resolved],
            others=[i for i in manual.list_items(stores.review) if i.prefix != item.prefix],
        )  # fmt: skip

    @app.get("/preview")
    def preview(request: Request, p: str, page: int) -> Response:
        user, _ = who(request)
        if user is None:
            return anonymous(request)
        item = find_item(p)
        manifest = json.loads(stores.review.read_bytes(f"{item.prefix}{item.name}.json"))
        return FileResponse(previews.page(item, manifest, page), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/evidence")
    def evidence(request: Request, p: str, page: int) -> Response:
        """The review picture of a flagged page (source page index `page`), evidence drawn over it."""
        user, _ = who(request)
        if user is None:
            return anonymous(request)
        item = find_item(p)
        name = item.thumbnails.get(str(page))
        if name is None:
            raise manual.ReviewError(f"{item.name}: no evidence picture for page {page + 1}")
        return Response(stores.review.read_bytes(f"{item.prefix}{name}"), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    async def acting(request: Request) -> tuple[User, dict, str]:
        user, _ = who(request)
        form, session = await checked_form(request)
        if user is None or not session.get("user"):
            raise Refused("sign in first")
        if form.get("confirm") != "yes":
            raise manual.ReviewError("the action was not confirmed; tick the confirmation box")
        return user, form, str(form.get("note", "")).strip()

    async def one_at_a_time(action: Callable[[], T]) -> T:
        """Run a review action in a worker thread (signing runs its own event loop), one at a time."""

        def locked() -> T:
            with ACTIONS:
                return action()

        return await run_in_threadpool(locked)

    def back_to(item: manual.ReviewItem | None, done: str) -> Response:
        if item is None:
            return RedirectResponse(f"/?done={done}", status_code=303)
        from urllib.parse import quote

        return RedirectResponse(f"/item?p={quote(item.prefix)}&done={done}", status_code=303)

    @app.post("/item/approve")
    async def approve(request: Request) -> Response:
        user, form, note = await acting(request)
        item = find_item(str(form.get("p", "")))
        await one_at_a_time(lambda: manual.approve(stores.review, stores.archive, item, by=user.name, note=note))
        return back_to(None, "approve")

    @app.post("/item/replace")
    async def replace(request: Request) -> Response:
        user, form, note = await acting(request)
        item = find_item(str(form.get("p", "")))
        insert = form.get("mode") == "insert"
        numbers = _numbers(str(form.get("pages", "")))
        upload = form.get("rescan")
        if upload is None or isinstance(upload, str) or not upload.filename:
            raise manual.ReviewError("choose the rescan file to upload")
        suffix = Path(upload.filename).suffix.lower()
        if suffix not in DROPPABLE:
            raise manual.ReviewError(f"{upload.filename}: not a scan (PDF, TIFF, JPEG or PNG)")
        with tempfile.TemporaryDirectory(prefix="digitize-upload-") as tmp:
            rescan = Path(tmp) / "upload" / f"rescan{suffix}"
            rescan.parent.mkdir()
            size = 0
            with rescan.open("wb") as fh:
                while chunk := await upload.read(CHUNK):
                    size += len(chunk)
                    if size > settings.limits.max_input_bytes:
                        raise manual.ReviewError(f"{upload.filename}: larger than limits.max_input_bytes ({settings.limits.max_input_bytes} bytes)")
                    fh.write(chunk)
            # The checks a station makes before it drops a scan: type, size, pages, a decodable first page.
            checked = await run_in_threadpool(lambda: check_folder(rescan.parent, limits=settings.limits))
            if checked.bad:
                raise manual.ReviewError(f"{upload.filename}: {checked.bad[0].reason}")
            # Blocking work (OCR, signing, which runs its own event loop) goes to a worker thread.
            await one_at_a_time(lambda: manual.replace_pages(
                stores.review, item, pages=numbers, rescan=rescan, settings=settings, by=user.name, signer=signer(),
                note=note, audit=stores.archive, insert=insert,
            ))  # fmt: skip
        return back_to(item, "insert" if insert else "replace")

    @app.post("/item/split")
    async def split(request: Request) -> Response:
        user, form, note = await acting(request)
        item = find_item(str(form.get("p", "")))
        at = _numbers(str(form.get("at", "")))
        if len(at) != 1:
            raise manual.ReviewError("give the one page number where the new dossier starts")
        new = await one_at_a_time(lambda: manual.split_item(
            stores.review, item, at=at[0], new_name=str(form.get("new_name", "")).strip(), settings=settings, by=user.name,
            signer=signer(), note=note, audit=stores.archive,
        ))  # fmt: skip
        return back_to(new, "split")

    @app.post("/item/move")
    async def move(request: Request) -> Response:
        user, form, note = await acting(request)
        item = find_item(str(form.get("p", "")))
        target = find_item(str(form.get("target", "")))
        pages = _numbers(str(form.get("pages", "")))
        await one_at_a_time(lambda: manual.move_pages(
            stores.review, item, target, pages=pages, settings=settings, by=user.name, signer=signer(), note=note,
            audit=stores.archive,
        ))  # fmt: skip
        return back_to(item, "move")

    @app.post("/item/code")
    async def set_code(request: Request) -> Response:
        user, form, note = await acting(request)
        item = find_item(str(form.get("p", "")))
        code = str(form.get("code", "")).strip()
        await one_at_a_time(lambda: manual.set_code(stores.review, item, code=code, settings=settings, by=user.name, note=note, audit=stores.archive))
        return back_to(item, "set_code")

    @app.post("/item/send-back")
    async def send_back(request: Request) -> Response:
        user, form, note = await acting(request)
        item = find_item(str(form.get("p", "")))
        pages = _numbers(str(form.get("pages", "")))
        await one_at_a_time(lambda: manual.send_back(stores.review, stores.inbox, item, pages=pages, note=note, by=user.name, audit=stores.archive))
        return back_to(item, "send_back")

    def find_quarantined(key: str) -> manual.QuarantinedInput:
        problem = key_problem(key)
        if problem:
            raise manual.ReviewError(f"unsafe input name: {problem}")
        return manual.quarantined_at(stores.review, key)

    @app.post("/quarantine/release")
    async def release(request: Request) -> Response:
        user, form, note = await acting(request)
        entry = find_quarantined(str(form.get("key", "")))
        await one_at_a_time(lambda: manual.release(stores.review, stores.inbox, entry, by=user.name, note=note, audit=stores.archive))
        return RedirectResponse("/?tab=quarantine&done=release", status_code=303)

    @app.post("/quarantine/discard")
    async def discard(request: Request) -> Response:
        user, form, note = await acting(request)
        entry = find_quarantined(str(form.get("key", "")))
        await one_at_a_time(lambda: manual.discard(stores.review, entry, reason=note, by=user.name, audit=stores.archive))
        return RedirectResponse("/?tab=quarantine&done=discard", status_code=303)

    @app.get("/actions")
    def actions(request: Request) -> Response:
        user, _ = who(request)
        if user is None:
            return anonymous(request)
        # A supervisor sees everyone's actions; a reviewer their own.
        entries = manual.list_actions(stores.review, by=None if user.role == Role.SUPERVISOR else user.name)
        return page(request, "actions.html", entries=entries)

    return app


def _page_count(manifest: dict) -> int:
    # Set when a person re-assembled the dossier; before, the night's page list says it.
    if isinstance(manifest.get("output", {}).get("pages"), int):
        return manifest["output"]["pages"]
    pages = manifest.get("document", {}).get("source_pages")
    return len(pages) if pages is not None else len([r for r in manifest.get("pages", []) if r.get("in_pdf")])
