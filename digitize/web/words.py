"""What the station says, in Vietnamese (the default) and English: labels, and flags with their evidence in plain words."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.flags import FlagName

LANGUAGES = ("vi", "en")

LABELS: dict[str, tuple[str, str]] = {
    "title": ("Trạm xét duyệt hồ sơ", "Review station"),
    "login": ("Đăng nhập", "Sign in"),
    "logout": ("Đăng xuất", "Sign out"),
    "user": ("Tên người dùng", "User name"),
    "password": ("Mật khẩu", "Password"),
    "bad_login": ("Sai tên người dùng hoặc mật khẩu.", "Wrong user name or password."),
    "queue": ("Hồ sơ chờ xử lý", "Items to handle"),
    "quarantine": ("Đầu vào bị cách ly", "Quarantined inputs"),
    "actions": ("Nhật ký thao tác", "Actions taken"),
    "station": ("Trạm", "Station"),
    "batch": ("Lô", "Batch"),
    "dossier": ("Hồ sơ", "Dossier"),
    "pages": ("Số trang", "Pages"),
    "age": ("Đã chờ", "Waiting"),
    "flags": ("Lý do", "Reasons"),
    "all": ("Tất cả", "All"),
    "filter": ("Lọc", "Filter"),
    "sort": ("Sắp xếp", "Sort"),
    "sort_age": ("Chờ lâu nhất", "Oldest first"),
    "sort_station": ("Theo trạm", "By station"),
    "sort_pages": ("Nhiều trang nhất", "Most pages"),
    "no_items": ("Không có hồ sơ nào chờ xử lý.", "Nothing is waiting."),
    "no_quarantine": ("Không có đầu vào nào bị cách ly.", "No input is quarantined."),
    "file": ("Tệp", "File"),
    "reason": ("Lý do", "Reason"),
    "no_copy": ("không giữ được bản sao", "no copy was kept"),
    "release": ("Cho xử lý lại", "Release for another try"),
    "discard": ("Loại bỏ (vẫn lưu giữ)", "Discard (kept)"),
    "discard_reason": ("Lý do loại bỏ", "Why it is discarded"),
    "note": ("Ghi chú (không bắt buộc)", "Note (optional)"),
    "confirm": ("Tôi xác nhận thao tác này", "I confirm this action"),
    "page": ("Trang", "Page"),
    "flagged": ("Trang bị gắn cờ", "Flagged page"),
    "text_layer": ("Lớp chữ nhận dạng", "Recognised text"),
    "evidence_image": ("Ảnh bằng chứng (nét xiên, khung, khung tên)", "Evidence picture (strokes, frame, title block)"),
    "no_text": ("(không có chữ)", "(no text)"),
    "zoom_in": ("Phóng to", "Zoom in"),
    "zoom_out": ("Thu nhỏ", "Zoom out"),
    "facts": ("Thông tin", "Facts"),
    "source": ("Nguồn", "Source"),
    "operator": ("Người quét", "Scanned by"),
    "scanned": ("Thời gian xử lý", "Processed at"),
    "dpi": ("Độ phân giải", "Resolution"),
    "rotation": ("Xoay", "Rotation"),
    "deskew": ("Chỉnh nghiêng", "Deskew"),
    "ocr_conf": ("Độ tin cậy nhận dạng", "OCR confidence"),
    "signature": ("Chữ ký số", "Digital signature"),
    "signed": ("đã ký", "signed"),
    "unsigned": ("chưa ký", "not signed"),
    "approve": ("Duyệt và lưu trữ", "Approve into the archive"),
    "replace": ("Thay trang bằng bản quét lại", "Replace pages with a rescan"),
    "insert": ("Chèn trang từ bản quét lại", "Insert pages from a rescan"),
    "pages_to_replace": ("Các trang cần thay (vd. 2,3)", "Pages to replace (e.g. 2,3)"),
    "insert_before": ("Chèn trước trang", "Insert before page"),
    "rescan_file": ("Tệp quét lại (PDF, TIFF, JPEG, PNG)", "Rescan file (PDF, TIFF, JPEG, PNG)"),
    "split": ("Tách hồ sơ làm hai", "Split the dossier in two"),
    "split_at": ("Hồ sơ mới bắt đầu từ trang", "The new dossier starts at page"),
    "new_name": ("Tên hồ sơ mới", "Name of the new dossier"),
    "move": ("Chuyển trang sang hồ sơ khác", "Move pages to another dossier"),
    "pages_to_move": ("Các trang cần chuyển (vd. 2,3)", "Pages to move (e.g. 2,3)"),
    "move_to": ("Chuyển vào cuối hồ sơ", "Add them at the end of"),
    "set_code": ("Đặt / sửa mã hồ sơ", "Set or correct the dossier code"),
    "code": ("Mã hồ sơ", "Dossier code"),
    "send_back": ("Gửi trạm quét lại", "Send back to the station for rescanning"),
    "pages_to_rescan": ("Các trang cần quét lại", "Pages to rescan"),
    "done": ("Đã thực hiện", "Done"),
    "error": ("Không thực hiện được", "Could not be done"),
    "history": ("Lịch sử thao tác", "History"),
    "resolved": ("Đã xử lý", "Resolved"),
    "archived": ("Đã lưu trữ", "Archived"),
    "back": ("Quay lại danh sách", "Back to the list"),
    "who": ("Người thực hiện", "Who"),
    "when": ("Lúc", "When"),
    "what": ("Thao tác", "Action"),
    "item": ("Mục", "Item"),
    "role_reviewer": ("người xét duyệt", "reviewer"),
    "role_supervisor": ("giám sát", "supervisor"),
    "days": ("ngày", "days"),
    "hours": ("giờ", "hours"),
    "minutes": ("phút", "minutes"),
    "unknown": ("không rõ", "unknown"),
}

ACTION_WORDS: dict[str, tuple[str, str]] = {
    "approve": ("Duyệt và lưu trữ", "Approved into the archive"),
    "replace": ("Thay trang", "Replaced pages"),
    "insert": ("Chèn trang", "Inserted pages"),
    "split": ("Tách hồ sơ", "Split the dossier"),
    "split_off": ("Tách ra từ hồ sơ khác", "Split off another dossier"),
    "move": ("Chuyển trang sang hồ sơ khác", "Moved pages to another dossier"),
    "move_in": ("Nhận trang từ hồ sơ khác", "Received pages from another dossier"),
    "set_code": ("Đặt mã hồ sơ", "Set the dossier code"),
    "send_back": ("Gửi trạm quét lại", "Sent back for rescanning"),
    "release": ("Cho xử lý lại", "Released for another try"),
    "discard": ("Loại bỏ (vẫn lưu giữ)", "Discarded (kept)"),
}


def _pct(value: object) -> str:
    return f"{float(value):.0%}" if isinstance(value, int | float) else "?"


def _num(value: object, digits: int = 0) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, int | float) else "?"


def _size(ev: dict) -> str:
    size = ev.get("size_mm") or [0, 0]
    return f"{_num(size[0])}×{_num(size[1])} mm"


_MODE_VI = {"gray": "thang xám", "bitonal": "đen trắng"}


def _pages(ev: dict) -> str:
    pages = ev.get("pages")
    return ", ".join(str(p + 1) for p in pages) if isinstance(pages, list) else str(pages)


# flag -> (name, evidence in words), each in (vi, en). A flag not here is shown by its name;
# "split_by_person" is the station's own mark on a dossier a reviewer split off, not a triage flag.
FLAGS: dict[str, tuple[tuple[str, str], Callable[[dict], tuple[str, str]]]] = {
    FlagName.TECHNICAL_DRAWING: (("Bản vẽ kỹ thuật", "Technical drawing"), lambda ev: (
        f"nét xiên, cung tròn trên {_pct(ev.get('curve_spread'))} tờ giấy; {_pct(ev.get('line_share'))} mực nằm trên các nét thẳng dài"
        + ("; có khung tên" if ev.get("title_block") else ""),
        f"oblique strokes and arcs over {_pct(ev.get('curve_spread'))} of the sheet; {_pct(ev.get('line_share'))} of the ink on long straight strokes"
        + ("; a title block" if ev.get("title_block") else ""),
    )),
    FlagName.OVERSIZED: (("Trang khổ lớn", "Oversized page"), lambda ev: (
        f"{_size(ev)}, lớn hơn khổ A4 quá {_pct(ev.get('tolerance'))}",
        f"{_size(ev)}, more than {_pct(ev.get('tolerance'))} larger than A4",
    )),
    FlagName.THICK_RECORD: (("Hồ sơ dày", "Thick record"), lambda ev: (
        f"{ev.get('pages')} trang, vượt ngưỡng {ev.get('threshold')} trang",
        f"{ev.get('pages')} pages, more than the threshold of {ev.get('threshold')}",
    )),
    FlagName.LOW_CONFIDENCE: (("Nhận dạng chữ không chắc chắn", "Doubtful OCR"), lambda ev: (
        f"độ tin cậy {_num(ev.get('ocr_confidence'))}/100; {_pct(ev.get('syllable_share'))} là âm tiết tiếng Việt hợp lệ; {ev.get('words', '?')} từ",
        f"confidence {_num(ev.get('ocr_confidence'))}/100; {_pct(ev.get('syllable_share'))} valid Vietnamese syllables; {ev.get('words', '?')} words",
    )),
    FlagName.UNREADABLE_PAGE: (("Trang không đọc được", "Unreadable page"), lambda ev: (str(ev.get("reason", "")), str(ev.get("reason", "")))),
    FlagName.SEPARATOR_UNREADABLE: (("Tờ phân cách không đọc được mã", "Separator sheet without a usable code"), lambda ev: (
        "thấy tờ tiếp nhận hoặc mã vạch nhưng không đọc được mã hồ sơ", "a receipt or barcode was seen but no dossier code could be read",
    )),
    FlagName.UNASSIGNED_PAGES: (("Trang chưa thuộc hồ sơ nào", "Pages not in any dossier"), lambda ev: (
        f"trang nguồn {_pages(ev)}", f"source pages {_pages(ev)}",
    )),
    FlagName.SPLIT_MISMATCH: (("Cách chia hồ sơ khác với khai báo của trạm", "Split differs from the station's list"), lambda ev: (
        ", ".join(f"{k}: {v}" for k, v in ev.items()), ", ".join(f"{k}: {v}" for k, v in ev.items()),
    )),
    FlagName.OCR_FAILED: (("Nhận dạng chữ thất bại", "OCR failed"), lambda ev: (str(ev.get("error", ev)), str(ev.get("error", ev)))),
    FlagName.DUPLICATE_CODE: (("Trùng mã hồ sơ", "Duplicate dossier code"), lambda ev: (
        f"mã {ev.get('code')} đã có hồ sơ khác được lưu trữ: {ev.get('archived')}",
        f"code {ev.get('code')} is already archived from other pages: {ev.get('archived')}",
    )),
    FlagName.CODE_FROM_TEXT: (("Mã hồ sơ đọc từ chữ in", "Dossier code read from the printed text"), lambda ev: (
        f"không đọc được mã QR/mã vạch của giấy tiếp nhận; mã {ev.get('code')} lấy từ dòng \"Mã hồ sơ\" in trên giấy, cần kiểm tra",
        f"the receipt's QR/barcode could not be read; code {ev.get('code')} was taken from its printed \"Mã hồ sơ\" line: check it",
    )),
    FlagName.BELOW_STANDARD: (("Bản quét dưới chuẩn", "Scanned below the standard"), lambda ev: (
        "; ".join(filter(None, [
            f"độ phân giải {_num(ev.get('dpi'))} dpi, dưới mức {_num(ev.get('min_dpi'))} dpi" if "dpi" in ev else "",
            f"quét {_MODE_VI.get(str(ev.get('colour_mode')), ev.get('colour_mode'))}, trạm yêu cầu quét màu" if "colour_mode" in ev else "",
        ])),
        "; ".join(filter(None, [
            f"{_num(ev.get('dpi'))} dpi, under the minimum of {_num(ev.get('min_dpi'))} dpi" if "dpi" in ev else "",
            f"scanned {ev.get('colour_mode')}, the station's profile asks for colour" if "colour_mode" in ev else "",
        ])),
    )),
    "split_by_person": (("Tách từ hồ sơ khác", "Split off another dossier"), lambda ev: (
        f"do người xét duyệt tách từ {ev.get('from')}", f"split by a reviewer from {ev.get('from')}",
    )),
}


def label(key: str, lang: str) -> str:
    pair = LABELS.get(key, (key, key))
    return pair[LANGUAGES.index(lang)]


def flag_name(flag: str, lang: str) -> str:
    names = FLAGS.get(flag, ((flag.replace("_", " "), flag.replace("_", " ")), None))[0]
    return names[LANGUAGES.index(lang)]


def flag_words(flag: str, evidence: dict, lang: str, *, page: int | None) -> str:
    """"Bản vẽ kỹ thuật: nét xiên, cung tròn trên 61% tờ giấy; …", with the page when there is one."""
    known = FLAGS.get(flag)
    index = LANGUAGES.index(lang)
    if known:
        detail = known[1](evidence)[index]
    else:
        detail = ", ".join(f"{k}: {v}" for k, v in evidence.items() if k not in ("page", "dossier_page"))
    where = f"{label('page', lang)} {page}: " if page else ""
    return f"{where}{flag_name(flag, lang)}: {detail}" if detail else f"{where}{flag_name(flag, lang)}"


def action_words(action: str, lang: str) -> str:
    return ACTION_WORDS.get(action, (action, action))[LANGUAGES.index(lang)]
