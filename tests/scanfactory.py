"""Synthetic scans of Vietnamese administrative pages with known ground truth."""

from __future__ import annotations

import io
import math
import unicodedata
from pathlib import Path

import cv2
import img2pdf
import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

MM_PER_INCH = 25.4
PAPER_MM = {"A4": (210.0, 297.0), "A3": (297.0, 420.0), "A5": (148.0, 210.0)}

_FONT_DIRS = ("/usr/share/fonts/truetype/liberation2", "/usr/share/fonts/truetype/liberation",
              "/usr/share/fonts/truetype/dejavu")
_FONT_FILES = {
    ("serif", False): ("LiberationSerif-Regular.ttf", "DejaVuSerif.ttf", "DejaVuSans.ttf"),
    ("serif", True): ("LiberationSerif-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSans-Bold.ttf",
                      "LiberationSerif-Regular.ttf", "DejaVuSans.ttf"),
    ("sans", False): ("LiberationSans-Regular.ttf", "DejaVuSans.ttf"),
    ("sans", True): ("LiberationSans-Bold.ttf", "DejaVuSans-Bold.ttf",
                     "LiberationSans-Regular.ttf", "DejaVuSans.ttf"),
}


class Heading(str):
    """A line rendered centred (in bold when the font has a bold face), never wrapped."""


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


NATIONAL_MOTTO = [Heading("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"), Heading("Độc lập - Tự do - Hạnh phúc")]

TITLES = {
    "don-de-nghi": "ĐƠN ĐỀ NGHỊ XÁC NHẬN TÌNH TRẠNG HÔN NHÂN",
    "giay-tiep-nhan": "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ",
    "quyet-dinh": "QUYẾT ĐỊNH",
    "to-khai": "TỜ KHAI ĐĂNG KÝ KHAI SINH",
    "bien-ban": "BIÊN BẢN KIỂM TRA HIỆN TRẠNG SỬ DỤNG ĐẤT",
    "thong-bao": "THÔNG BÁO BỔ SUNG HỒ SƠ",
}

HEADING_LINES = NATIONAL_MOTTO + [Heading(t) for t in TITLES.values()]

VIETNAMESE_PARAGRAPHS = [_nfc(p) for p in [
    # 0-1: đơn đề nghị
    "Kính gửi: Ủy ban nhân dân xã Nghi Phong, huyện Nghi Lộc, tỉnh Nghệ An. Tôi tên là Nguyễn Thị Hoa, "
    "sinh ngày 14 tháng 3 năm 1987, số căn cước công dân 040187003521, cấp ngày 10 tháng 8 năm 2021. "
    "Nơi thường trú: xóm 5, xã Nghi Phong. Tôi làm đơn này đề nghị Ủy ban nhân dân xã xác nhận tình "
    "trạng hôn nhân để bổ sung hồ sơ vay vốn tại Ngân hàng Chính sách xã hội huyện.",
    "Lý do đề nghị: gia đình tôi có nhu cầu vay vốn để mở rộng sản xuất chăn nuôi, ngân hàng yêu cầu "
    "bổ sung giấy xác nhận tình trạng hôn nhân còn thời hạn sử dụng. Tôi cam đoan những nội dung khai "
    "trên là đúng sự thật và hoàn toàn chịu trách nhiệm trước pháp luật về lời khai của mình. Kính mong "
    "Ủy ban nhân dân xã xem xét, giải quyết.",
    # 2-4: giấy tiếp nhận hồ sơ và hẹn trả kết quả
    "Bộ phận Tiếp nhận và Trả kết quả Ủy ban nhân dân huyện Diễn Châu đã tiếp nhận hồ sơ của ông Trần "
    "Văn Bình, địa chỉ xóm Trung Tiến, xã Diễn Thành, huyện Diễn Châu, tỉnh Nghệ An. Số điện thoại liên "
    "hệ: 0912 345 678. Nội dung yêu cầu giải quyết: cấp đổi giấy chứng nhận quyền sử dụng đất, quyền sở "
    "hữu nhà ở và tài sản khác gắn liền với đất.",
    "Thành phần hồ sơ gồm: đơn đề nghị cấp đổi giấy chứng nhận theo mẫu số 10/ĐK, một bản chính; bản "
    "gốc giấy chứng nhận đã cấp, một bản; bản sao căn cước công dân của người sử dụng đất, một bản. Số "
    "lượng hồ sơ: 01 bộ. Thời gian giải quyết hồ sơ là 10 ngày làm việc kể từ ngày nhận đủ hồ sơ hợp lệ "
    "theo quy định.",
    "Thời gian nhận hồ sơ: 09 giờ 30 phút, ngày 12 tháng 5 năm 2025. Thời gian trả kết quả giải quyết "
    "hồ sơ: ngày 26 tháng 5 năm 2025. Đề nghị ông mang theo giấy tiếp nhận này và căn cước công dân khi "
    "đến nhận kết quả. Trường hợp hồ sơ cần bổ sung, Bộ phận Tiếp nhận sẽ thông báo bằng văn bản hoặc "
    "qua số điện thoại đã đăng ký.",
    # 5-6: quyết định
    "Căn cứ Luật Tổ chức chính quyền địa phương ngày 19 tháng 6 năm 2015; căn cứ Nghị định số "
    "61/2018/NĐ-CP ngày 23 tháng 4 năm 2018 của Chính phủ về thực hiện cơ chế một cửa, một cửa liên "
    "thông trong giải quyết thủ tục hành chính; xét đề nghị của Trưởng phòng Nội vụ huyện Quỳnh Lưu tại "
    "Tờ trình số 45/TTr-NV ngày 03 tháng 3 năm 2025.",
    "Điều 1. Phê duyệt danh mục thủ tục hành chính được tiếp nhận và trả kết quả tại Bộ phận Một cửa "
    "Ủy ban nhân dân các xã, thị trấn trên địa bàn huyện Quỳnh Lưu. Điều 2. Quyết định này có hiệu lực "
    "kể từ ngày ký. Chánh Văn phòng Hội đồng nhân dân và Ủy ban nhân dân huyện, Trưởng các phòng, ban "
    "chuyên môn và Chủ tịch Ủy ban nhân dân các xã, thị trấn chịu trách nhiệm thi hành Quyết định này.",
    # 7-8: tờ khai
    "Họ, chữ đệm, tên người yêu cầu: Lê Văn Cường. Nơi cư trú: khối 7, phường Hưng Dũng, thành phố "
    "Vinh, tỉnh Nghệ An. Quan hệ với người được khai sinh: cha. Đề nghị cơ quan đăng ký khai sinh cho "
    "người dưới đây: họ, chữ đệm, tên: Lê Minh Khang; ngày, tháng, năm sinh: 02 tháng 01 năm 2025; giới "
    "tính: nam; dân tộc: Kinh; quốc tịch: Việt Nam; nơi sinh: Bệnh viện Sản Nhi Nghệ An.",
    "Tôi cam đoan nội dung đề nghị đăng ký khai sinh trên đây là đúng sự thật, được sự thỏa thuận nhất "
    "trí của các bên liên quan theo quy định pháp luật. Tôi chịu hoàn toàn trách nhiệm trước pháp luật "
    "về nội dung cam đoan của mình. Đề nghị cấp bản sao trích lục khai sinh: có, số lượng 02 bản. Làm "
    "tại thành phố Vinh, ngày 08 tháng 01 năm 2025.",
    # 9-10: biên bản
    "Hôm nay, vào lúc 14 giờ 00 phút ngày 20 tháng 6 năm 2025, tại trụ sở Ủy ban nhân dân xã Thanh "
    "Ngọc, huyện Thanh Chương, tỉnh Nghệ An, chúng tôi gồm: ông Phạm Đức Thắng, Phó Chủ tịch Ủy ban nhân "
    "dân xã, chủ trì; bà Hoàng Thị Mai, công chức Tư pháp - Hộ tịch, thư ký; ông Đặng Văn Lợi, trưởng "
    "xóm 3, đại diện khu dân cư, tiến hành lập biên bản kiểm tra hiện trạng thửa đất.",
    "Qua kiểm tra thực tế, thửa đất số 127, tờ bản đồ số 15, diện tích 320 mét vuông, hiện do hộ ông "
    "Hồ Sỹ Tuấn sử dụng ổn định, không có tranh chấp, ranh giới thửa đất phù hợp với hồ sơ địa chính. "
    "Biên bản được lập thành 03 bản có giá trị pháp lý như nhau, đã đọc lại cho các thành viên cùng "
    "nghe, nhất trí ký tên và kết thúc vào lúc 15 giờ 30 phút cùng ngày.",
    # 11: thông báo bổ sung hồ sơ
    "Sau khi kiểm tra, hồ sơ đề nghị cấp giấy phép xây dựng nhà ở riêng lẻ của bà Võ Thị Lan chưa đầy "
    "đủ theo quy định. Đề nghị bà bổ sung bản vẽ mặt bằng móng công trình và bản sao có chứng thực giấy "
    "tờ về quyền sử dụng đất. Thời hạn bổ sung hồ sơ là 05 ngày làm việc. Quá thời hạn trên, hồ sơ sẽ "
    "được trả lại cho công dân theo quy định về thủ tục hành chính.",
]]

ENGLISH_LINES = [
    "SOCIALIST REPUBLIC OF VIETNAM",
    "Independence - Freedom - Happiness",
    "RECEIPT OF APPLICATION AND APPOINTMENT FOR RETURN OF RESULTS",
    "The application file has been received in full and will be processed within ten working days.",
    "Please bring this receipt and your citizen identity card when collecting the result.",
]

# Ready-made page layouts: motto, title, then the paragraphs belonging to that kind of document.
DOCUMENTS = {
    "don-de-nghi": NATIONAL_MOTTO + [Heading(TITLES["don-de-nghi"])] + VIETNAMESE_PARAGRAPHS[0:2],
    "giay-tiep-nhan": NATIONAL_MOTTO + [Heading(TITLES["giay-tiep-nhan"])] + VIETNAMESE_PARAGRAPHS[2:5],
    "quyet-dinh": NATIONAL_MOTTO + [Heading(TITLES["quyet-dinh"]),
                                    Heading("Về việc phê duyệt danh mục thủ tục hành chính")]
    + VIETNAMESE_PARAGRAPHS[5:7],
    "to-khai": NATIONAL_MOTTO + [Heading(TITLES["to-khai"])] + VIETNAMESE_PARAGRAPHS[7:9],
    "bien-ban": NATIONAL_MOTTO + [Heading(TITLES["bien-ban"])] + VIETNAMESE_PARAGRAPHS[9:11],
    "thong-bao": NATIONAL_MOTTO + [Heading(TITLES["thong-bao"])] + VIETNAMESE_PARAGRAPHS[11:12],
}


def paper_px(*, dpi: int, paper: str = "A4") -> tuple[int, int]:
    """Return (height, width) in pixels of a portrait sheet."""
    w_mm, h_mm = PAPER_MM[paper]
    return round(h_mm / MM_PER_INCH * dpi), round(w_mm / MM_PER_INCH * dpi)


def _mm(mm: float, dpi: float) -> float:
    return mm / MM_PER_INCH * dpi


def _font_path(family: str, bold: bool) -> str:
    for name in _FONT_FILES[(family, bold)]:
        for d in _FONT_DIRS:
            p = Path(d) / name
            if p.exists():
                return str(p)
    raise FileNotFoundError(f"no TrueType font for {family!r}; apt-get install fonts-liberation2 fonts-dejavu-core")


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def render_page(*, text_lines_or_paragraphs, dpi: int, paper: str = "A4", font: str = "serif",
                font_pt: float = 12.5, seed: int = 0) -> tuple[np.ndarray, str]:
    """Render paragraphs (str, wrapped) and Heading lines (centred) on a clean white page.

    Returns the uint8 page and the ground truth: rendered lines joined by "\\n", with an empty
    line where a blank line separates blocks. Text that does not fit is dropped from both.
    """
    rng = np.random.default_rng(seed)
    height, width = paper_px(dpi=dpi, paper=paper)
    side = _mm(rng.uniform(20, 25), dpi)
    top = _mm(rng.uniform(20, 25), dpi)
    bottom = height - _mm(rng.uniform(20, 25), dpi)
    size_px = max(6, round(font_pt / 72 * dpi))
    body = ImageFont.truetype(_font_path(font, False), size_px)
    bold = ImageFont.truetype(_font_path(font, True), size_px)
    line_h = round(size_px * rng.uniform(1.3, 1.45))
    ascent, descent = body.getmetrics()

    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    gt: list[str] = []
    y = top + ascent
    previous_heading = False
    full = False
    for block in text_lines_or_paragraphs:
        is_heading = isinstance(block, Heading)
        text = _nfc(str(block)).strip()
        if gt and not (is_heading and previous_heading):
            y += line_h
            gt.append("")
        lines = [" ".join(text.split())] if is_heading else _wrap(text, body, width - 2 * side)
        for line in lines:
            if y + descent > bottom:
                full = True
                break
            if is_heading:
                draw.text((width / 2, y), line, font=bold, fill=0, anchor="ms")
            else:
                draw.text((side, y), line, font=body, fill=0, anchor="ls")
            gt.append(line)
            y += line_h
        previous_heading = is_heading
        if full:
            break
    while gt and gt[-1] == "":
        gt.pop()
    return np.asarray(img, dtype=np.uint8).copy(), _nfc("\n".join(gt))


def _bleed_layer(shape: tuple[int, int], *, dpi: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative factor (0..1) of text showing through from the back of the sheet."""
    h, w = shape
    paper = min(PAPER_MM, key=lambda p: abs(paper_px(dpi=dpi, paper=p)[0] - h))
    picks = rng.choice(len(VIETNAMESE_PARAGRAPHS), size=4, replace=False)
    back, _ = render_page(text_lines_or_paragraphs=NATIONAL_MOTTO + [VIETNAMESE_PARAGRAPHS[i] for i in picks],
                          dpi=dpi, paper=paper, font=str(rng.choice(["serif", "sans"])),
                          seed=int(rng.integers(1 << 31)))
    back = cv2.resize(back, (w, h), interpolation=cv2.INTER_AREA) if back.shape != (h, w) else back
    back = np.fliplr(back).astype(np.float32)
    back = cv2.GaussianBlur(back, (0, 0), 1.6 * dpi / 300)
    darkest = rng.uniform(200, 225)
    return (255 - (255 - back) * (255 - darkest) / 255) / 255


def _punch_holes(page: np.ndarray, *, dpi: int, rng: np.random.Generator) -> None:
    h, _ = page.shape
    r = int(round(_mm(3.0, dpi)))
    cx = int(round(_mm(12.0, dpi)))
    shade = int(rng.uniform(40, 80))
    for dy_mm in (-40.0, 40.0):
        cv2.circle(page, (cx, int(round(h / 2 + _mm(dy_mm, dpi)))), r, shade, thickness=-1, lineType=cv2.LINE_AA)


def _dark_border(page: np.ndarray, *, dpi: int, rng: np.random.Generator) -> None:
    h, w = page.shape
    edges = ["top", "bottom", "left", "right"]
    first = str(rng.choice(edges))
    chosen = [first]
    if rng.random() < 0.5:
        chosen.append({"top": "left", "bottom": "right", "left": "bottom", "right": "top"}[first])
    for edge in chosen:
        band = max(2, int(round(_mm(rng.uniform(3, 7), dpi))))
        fade = max(1, int(round(_mm(1.0, dpi))))
        dark = rng.uniform(25, 55)
        # Darkest at the very edge, softening inwards over ~1 mm like a lid shadow.
        ramp = np.concatenate([np.full(band, dark), np.linspace(dark, 255, fade + 2)[1:-1]]).astype(np.float32)
        n = len(ramp)
        if edge == "top":
            page[:n, :] = np.minimum(page[:n, :], ramp[:, None])
        elif edge == "bottom":
            page[-n:, :] = np.minimum(page[-n:, :], ramp[::-1, None])
        elif edge == "left":
            page[:, :n] = np.minimum(page[:, :n], ramp[None, :])
        else:
            page[:, -n:] = np.minimum(page[:, -n:], ramp[None, ::-1])


def scan_effects(gray: np.ndarray, *, dpi: int, skew_deg: float = 0.0, rotate90: int = 0, noise: float = 0.0,
                 blur: bool = True, bleed_through: bool = False, punch_holes: bool = False,
                 dark_border: bool = False, seed: int = 0) -> np.ndarray:
    """Make a clean rendered page look scanned; output has the same size unless rotate90 is odd.

    noise is the standard deviation of Gaussian sensor noise in grey levels (2-4 is typical).
    """
    rng = np.random.default_rng(seed)
    page = gray.astype(np.float32)
    h, w = page.shape
    if bleed_through:
        page *= _bleed_layer((h, w), dpi=dpi, rng=rng)
    paper = float(rng.integers(236, 250))
    ink = float(rng.uniform(15, 35))
    page = ink + (paper - ink) * page / 255
    # A faint lighting falloff across the platen; kept to about one grey level so PNGs stay small.
    page -= np.linspace(0, rng.uniform(0.5, 1.5), w, dtype=np.float32)[None, :]
    if punch_holes:
        _punch_holes(page, dpi=dpi, rng=rng)
    if skew_deg:
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), skew_deg, 1.0)
        page = cv2.warpAffine(page, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=255.0)
    if dark_border:
        _dark_border(page, dpi=dpi, rng=rng)
    if blur:
        page = cv2.GaussianBlur(page, (0, 0), 0.5 * dpi / 300)
    if noise > 0:
        page += rng.normal(0.0, noise, page.shape).astype(np.float32)
    out = np.clip(np.rint(page), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.rot90(out, k=rotate90 % 4)) if rotate90 % 4 else out


def flatten_paper(gray: np.ndarray, *, tolerance: int = 6) -> np.ndarray:
    """Snap near-paper pixels to the paper level so lossless formats compress well."""
    level = int(np.median(gray))
    out = gray.copy()
    out[np.abs(gray.astype(np.int16) - level) <= tolerance] = level
    return out


# Bitonal scanners threshold at mid-gray or below: paper, and faint bleed-through, stay white.
SCANNER_MAX_THRESHOLD = 150


def to_bitonal(gray: np.ndarray, *, threshold: int | None = None) -> np.ndarray:
    """Return a uint8 0/255 image, thresholded as a bitonal scanner would (Otsu, capped at mid-gray)."""
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_RGB2GRAY)
    if threshold is None:
        otsu, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        # On a blank sheet Otsu splits the paper's own noise in two; no scanner does that.
        threshold = min(int(otsu), SCANNER_MAX_THRESHOLD)
    return np.where(gray > threshold, 255, 0).astype(np.uint8)


def blank_page(*, dpi: int, paper: str = "A4", seed: int = 0, bleed_through: bool = False,
               punch_holes: bool = False, noise: float = 2.0) -> np.ndarray:
    """A scanned sheet with no text of its own."""
    h, w = paper_px(dpi=dpi, paper=paper)
    return scan_effects(np.full((h, w), 255, np.uint8), dpi=dpi, noise=noise, bleed_through=bleed_through,
                        punch_holes=punch_holes, seed=seed)


def _stamp_mask(size: int, *, text: str, rng: np.random.Generator) -> np.ndarray:
    """Round office seal (rings, curved text, star) as float alpha in 0..1."""
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    c = size / 2
    r_out = size / 2 - 2
    ring = max(2, round(size * 0.022))
    d.ellipse((c - r_out, c - r_out, c + r_out, c + r_out), outline=255, width=ring)
    r_in = r_out * 0.70
    d.ellipse((c - r_in, c - r_in, c + r_in, c + r_in), outline=255, width=max(1, ring // 2))
    star_r = r_in * 0.38
    pts = []
    for k in range(10):
        a = -math.pi / 2 + k * math.pi / 5
        rr = star_r if k % 2 == 0 else star_r * 0.4
        pts.append((c + rr * math.cos(a), c + rr * math.sin(a)))
    d.polygon(pts, fill=255)
    glyph_px = max(6, round((r_out - r_in) * 0.55))
    font = ImageFont.truetype(_font_path("sans", True), glyph_px)
    r_text = (r_out + r_in) / 2
    span = 2 * math.pi * 0.92
    for i, ch in enumerate(text):
        if ch == " ":
            continue
        theta = -math.pi / 2 - span / 2 + span * (i + 0.5) / len(text)
        tile = Image.new("L", (glyph_px * 2, glyph_px * 2), 0)
        ImageDraw.Draw(tile).text((glyph_px, glyph_px), ch, font=font, fill=255, anchor="mm")
        tile = tile.rotate(-math.degrees(theta) - 90, resample=Image.BICUBIC)
        x = round(c + r_text * math.cos(theta) - glyph_px)
        y = round(c + r_text * math.sin(theta) - glyph_px)
        region = mask.crop((x, y, x + tile.width, y + tile.height))
        mask.paste(ImageChops.lighter(region, tile), (x, y))
    alpha = np.asarray(mask, np.float32) / 255
    # Uneven ink: low-frequency blotches so the seal is not a perfect vector drawing.
    blotch = cv2.resize(rng.uniform(0.55, 1.0, (6, 6)).astype(np.float32), (size, size),
                        interpolation=cv2.INTER_CUBIC)
    return np.clip(alpha * blotch, 0, 1)


def colourize(gray: np.ndarray, seed: int = 0, *, dpi: int | None = None,
              stamp_text: str = "ỦY BAN NHÂN DÂN * HUYỆN DIỄN CHÂU * NGHỆ AN *") -> np.ndarray:
    """Turn a grey scan into an RGB one: yellowish paper, black text, a red or blue seal."""
    rng = np.random.default_rng(seed)
    h, w = gray.shape
    if dpi is None:
        dpi = min(h, w) / (PAPER_MM["A4"][0] / MM_PER_INCH)
    g = gray.astype(np.float32)
    yellow = np.array([1.0, rng.uniform(0.975, 0.99), rng.uniform(0.90, 0.94)], np.float32)
    rgb = g[..., None] * yellow
    size = int(round(_mm(rng.uniform(34, 40), dpi)))
    rows = np.flatnonzero((gray < 128).sum(axis=1) > 3)
    last = int(rows[-1]) if rows.size else h // 2
    # Seals go over the signature block below the last line of text, on the right; a page
    # filled to the bottom has no signature block, and so no seal.
    cy = int(last + size * rng.uniform(0.55, 0.7))
    if size < min(h, w) and cy + size / 2 < h:
        cx = int(np.clip(w * rng.uniform(0.62, 0.75), size / 2, w - size / 2 - 1))
        alpha = _stamp_mask(size, text=_nfc(stamp_text), rng=rng) * rng.uniform(0.75, 0.9)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 0.5 * dpi / 300)
        ink = np.array([205, 35, 45] if rng.random() < 0.6 else [35, 65, 175], np.float32)
        y0, x0 = cy - size // 2, cx - size // 2
        tile = rgb[y0:y0 + size, x0:x0 + size]
        # Multiply blend keeps the black text black where the seal overlaps it.
        tile *= 1 - alpha[..., None] * (1 - ink / 255)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _pil(img: np.ndarray, *, colour: bool = False, seed: int = 0) -> Image.Image:
    if colour and img.ndim == 2:
        img = colourize(img, seed)
    if img.dtype == bool:
        return Image.fromarray(img.astype(np.uint8) * 255, "L")
    return Image.fromarray(np.ascontiguousarray(img))


def encode_png(img: np.ndarray, dpi: int, *, colour: bool = False, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    _pil(img, colour=colour, seed=seed).save(buf, format="PNG", dpi=(dpi, dpi), optimize=True)
    return buf.getvalue()


def encode_jpeg(img: np.ndarray, dpi: int, *, quality: int = 85, colour: bool = False, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    _pil(img, colour=colour, seed=seed).save(buf, format="JPEG", dpi=(dpi, dpi), quality=quality)
    return buf.getvalue()


def save_png(path, img: np.ndarray, dpi: int, *, colour: bool = False, seed: int = 0) -> Path:
    path = Path(path)
    path.write_bytes(encode_png(img, dpi, colour=colour, seed=seed))
    return path


def save_jpeg(path, img: np.ndarray, dpi: int, *, quality: int = 85, colour: bool = False, seed: int = 0) -> Path:
    path = Path(path)
    path.write_bytes(encode_jpeg(img, dpi, quality=quality, colour=colour, seed=seed))
    return path


def save_tiff(path, pages: list[np.ndarray], dpi: int, *, compression: str = "group4", colour: bool = False,
              seed: int = 0, quality: int = 85) -> Path:
    """Multi-page TIFF; group4 pages are thresholded to 1 bit, others are stored as given."""
    path = Path(path)
    if compression == "group4":
        frames = [Image.fromarray(to_bitonal(p) if p.dtype != bool else p.astype(np.uint8) * 255, "L")
                  .point(lambda v: 255 if v > 127 else 0, mode="1") for p in pages]
    else:
        frames = [_pil(p, colour=colour, seed=seed + i) for i, p in enumerate(pages)]
    extra = {"quality": quality} if compression == "jpeg" else {}
    frames[0].save(path, format="TIFF", save_all=True, append_images=frames[1:], compression=compression,
                   dpi=(dpi, dpi), **extra)
    return path


def save_pdf(path, pages_as_jpeg_or_png_bytes: list, dpi: int) -> Path:
    """Scanner-style PDF: one full-page image per page, page size = pixels / dpi."""
    path = Path(path)
    pages = [p if isinstance(p, (bytes, bytearray)) else encode_jpeg(p, dpi, quality=75)
             for p in pages_as_jpeg_or_png_bytes]
    pdf = img2pdf.convert([bytes(p) for p in pages], layout_fun=img2pdf.get_fixed_dpi_layout_fun((dpi, dpi)),
                          nodate=True, engine=img2pdf.Engine.internal)
    path.write_bytes(pdf)
    return path


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pdf", ".bmp", ".gif", ".webp", ".jp2"}


def write_ground_truth(path_without_ext_or_image_path, text: str) -> Path:
    """Write <stem>.gt.txt next to the image; multi-page text uses "\\f" between pages."""
    p = Path(path_without_ext_or_image_path)
    if p.suffix.lower() in _IMAGE_SUFFIXES:
        p = p.with_suffix("")
    out = p.parent / f"{p.name}.gt.txt"
    out.write_text(_nfc(text), encoding="utf-8")
    return out


# --- Dossier separators: reception receipts with a QR or Code 128 code, separator sheets -------------------

RECEIPT_NAMES = [_nfc(n) for n in (
    "Trần Văn Bình", "Nguyễn Thị Hoa", "Lê Văn Cường", "Phạm Thị Thu Hà", "Hồ Sỹ Tuấn", "Võ Thị Lan",
    "Đặng Văn Lợi", "Hoàng Thị Mai", "Nguyễn Đình Khôi", "Bùi Thị Ngọc Ánh",
)]
RECEIPT_PROCEDURES = [_nfc(p) for p in (
    "Cấp đổi giấy chứng nhận quyền sử dụng đất", "Đăng ký khai sinh", "Xác nhận tình trạng hôn nhân",
    "Cấp giấy phép xây dựng nhà ở riêng lẻ", "Chứng thực bản sao từ bản chính giấy tờ, văn bản",
    "Đăng ký biến động quyền sử dụng đất", "Đăng ký thường trú",
)]


def _symbol_modules(content: str, symbology: str) -> np.ndarray:
    """The symbol at one pixel per module, quiet zones included, 0 = ink, 255 = paper."""
    import zxingcpp  # only the separator generators need it

    if symbology == "qr":
        barcode = zxingcpp.create_barcode(content, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    elif symbology == "code128":
        barcode = zxingcpp.create_barcode(content, zxingcpp.BarcodeFormat.Code128)
    else:
        raise ValueError(f"unknown symbology {symbology!r}")
    return np.asarray(zxingcpp.write_barcode_to_image(barcode, scale=1, add_quiet_zones=True), np.uint8).copy()


def _symbol_image(content: str, *, symbology: str, code_mm: float, dpi: int) -> np.ndarray:
    """QR: code_mm is the whole width incl. quiet zone. Code 128: code_mm is the bar height, narrow bar >= 0.25 mm."""
    modules = _symbol_modules(content, symbology)
    if symbology == "qr":
        size = max(modules.shape[1], int(round(_mm(code_mm, dpi))))
        return cv2.resize(modules, (size, size), interpolation=cv2.INTER_NEAREST)
    narrow = max(1, math.ceil(_mm(0.25, dpi) - 1e-6))
    row = modules[modules.shape[0] // 2]
    height = max(1, int(round(_mm(code_mm, dpi))))
    return cv2.resize(row[None, :], (row.size * narrow, height), interpolation=cv2.INTER_NEAREST)


def _damage_symbol(sym: np.ndarray, *, symbology: str, rng: np.random.Generator) -> np.ndarray:
    """Cover ~40% of the symbol with an irregular white-out or ink blot so it cannot be decoded."""
    h, w = sym.shape
    out = sym.copy()
    fill = 255 if rng.random() < 0.5 else int(rng.uniform(0, 40))
    theta = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    wobble = 1 + sum(rng.uniform(0.03, 0.08) * np.sin(k * theta + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
    if symbology == "qr":
        # Centred over one finder pattern's quadrant, reaching the middle: ~40% of the area.
        r = 0.36 * w
        cx = w * (0.32 if rng.random() < 0.5 else 0.68)
        cy = h * 0.32 if cx < w / 2 or rng.random() < 0.5 else h * 0.68
        pts = np.stack([cx + r * wobble * np.cos(theta), cy + r * wobble * np.sin(theta)], 1)
    else:
        # A band over the middle of the bars, full height: the start/stop pattern cannot be paired.
        cx, cy, rx, ry = w * rng.uniform(0.4, 0.6), h / 2, 0.21 * w, 0.75 * h
        pts = np.stack([cx + rx * wobble * np.cos(theta), cy + ry * wobble * np.sin(theta)], 1)
    cv2.fillPoly(out, [np.round(pts).astype(np.int32)], fill, lineType=cv2.LINE_AA)
    # A smear across the rest: a few ink strokes dragged over the modules.
    for _ in range(int(rng.integers(2, 4))):
        p0 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        p1 = (int(np.clip(p0[0] + rng.uniform(-0.5, 0.5) * w, 0, w)), int(np.clip(p0[1] + rng.uniform(-0.5, 0.5) * h, 0, h)))
        cv2.line(out, p0, p1, int(rng.uniform(0, 60)), max(1, int(0.04 * min(h, w))), cv2.LINE_AA)
    return out


def _paste_dark(page: np.ndarray, tile: np.ndarray, x0: int, y0: int) -> None:
    h, w = tile.shape
    region = page[y0:y0 + h, x0:x0 + w]
    np.minimum(region, tile, out=region)


def _shift_down(page: np.ndarray, rows: int) -> np.ndarray:
    """Move the page content down by rows, white coming in at the top; content must not fall off."""
    if rows <= 0:
        return page
    ink = np.flatnonzero((page < 128).any(axis=1))
    assert not ink.size or ink[-1] + rows < page.shape[0], "content would be pushed off the page"
    out = np.full_like(page, 255)
    out[rows:] = page[:-rows]
    return out


def receipt_page(*, code: str | None, dpi: int, symbology: str = "qr", code_mm: float = 25.0, paper: str = "A4",
                 seed: int = 0, readable: bool = True, payload: str | None = None) -> tuple[np.ndarray, str]:
    """A reception receipt (giấy tiếp nhận hồ sơ) with its dossier code as a QR or Code 128 in the top right.

    For QR, code_mm is the symbol's width including the quiet zone; for Code 128 it is the bar height.
    readable=False draws a damaged symbol that cannot be decoded (also when code is None); code=None
    with readable=True draws no symbol. payload, when given, is what the symbol holds instead of the
    bare code (a portal URL, JSON, key: value lines). Returns the clean page and the ground truth of its text.
    """
    rng = np.random.default_rng(seed)
    name = RECEIPT_NAMES[int(rng.integers(len(RECEIPT_NAMES)))]
    procedure = RECEIPT_PROCEDURES[int(rng.integers(len(RECEIPT_PROCEDURES)))]
    day, month = int(rng.integers(1, 18)), int(rng.integers(1, 13))
    year = int(rng.choice([2025, 2026]))
    lines = [f"Mã hồ sơ: {code}" if code else "Mã hồ sơ: ....................", f"Người nộp hồ sơ: {name}"]
    extra = [f"Thủ tục: {procedure}",
             f"Ngày nhận hồ sơ: {day:02d}/{month:02d}/{year}; ngày hẹn trả kết quả: {day + 10:02d}/{month:02d}/{year}"]
    lines += extra[:int(rng.integers(0, 3))]
    page, gt = render_page(text_lines_or_paragraphs=NATIONAL_MOTTO + [Heading(TITLES["giay-tiep-nhan"])] + lines,
                           dpi=dpi, paper=paper, font=str(rng.choice(["serif", "sans"])), font_pt=12.5,
                           seed=int(rng.integers(1 << 31)))
    if code is None and readable:
        return page, gt
    content = payload or code or "000.00.{:02d}.H{:02d}-{:06d}-{:04d}".format(*rng.integers([10, 10, 0, 0], [99, 99, 999999, 9999]))
    sym = _symbol_image(content, symbology=symbology, code_mm=code_mm, dpi=dpi)
    if not readable:
        sym = _damage_symbol(sym, symbology=symbology, rng=rng)
    h, w = page.shape
    x0 = int(round(w - _mm(rng.uniform(12, 18), dpi) - sym.shape[1]))
    y0 = int(round(_mm(rng.uniform(10, 15), dpi)))
    ink = np.flatnonzero((page < 128).any(axis=1))
    page = _shift_down(page, int(y0 + sym.shape[0] + _mm(4, dpi) - (ink[0] if ink.size else 0)))
    _paste_dark(page, sym, x0, y0)
    return page, gt


def separator_sheet(*, payload: str = "SEP", dpi: int, seed: int = 0, code_mm: float = 40, paper: str = "A4") -> np.ndarray:
    """A mostly empty separator sheet: a big QR holding payload and the line "TỜ PHÂN CÁCH / SEPARATOR"."""
    rng = np.random.default_rng(seed)
    h, w = paper_px(dpi=dpi, paper=paper)
    page = np.full((h, w), 255, np.uint8)
    sym = _symbol_image(payload, symbology="qr", code_mm=code_mm, dpi=dpi)
    x0 = int(round((w - sym.shape[1]) / 2 + _mm(rng.uniform(-10, 10), dpi)))
    y0 = int(round(_mm(rng.uniform(40, 70), dpi)))
    _paste_dark(page, sym, x0, y0)
    img = Image.fromarray(page)
    font = ImageFont.truetype(_font_path("sans", True), max(8, round(18 / 72 * dpi)))
    ImageDraw.Draw(img).text((w / 2, y0 + sym.shape[0] + _mm(15, dpi)), _nfc("TỜ PHÂN CÁCH / SEPARATOR"),
                             font=font, fill=0, anchor="mt")
    return np.asarray(img, dtype=np.uint8).copy()


# --- Technical drawings ------------------------------------------------------------------------------------------

class _Sheet:
    """Drawing helper: millimetre coordinates on a white landscape sheet, cv2 line art, PIL text last."""

    def __init__(self, *, dpi: int, paper: str):
        self.dpi = dpi
        ph, pw = paper_px(dpi=dpi, paper=paper)
        self.img = np.full((pw, ph), 255, np.uint8)  # landscape: height = short side
        self.w_mm, self.h_mm = PAPER_MM[paper][1], PAPER_MM[paper][0]
        self.texts: list[tuple[float, float, str, float, bool, str]] = []

    def px(self, x: float, y: float) -> tuple[int, int]:
        return int(round(_mm(x, self.dpi))), int(round(_mm(y, self.dpi)))

    def t(self, mm: float) -> int:
        return max(1, int(round(_mm(mm, self.dpi))))

    def line(self, p, q, mm: float = 0.35, shade: int = 0) -> None:
        cv2.line(self.img, self.px(*p), self.px(*q), shade, self.t(mm), cv2.LINE_AA)

    def polyline(self, pts, mm: float = 0.35, closed: bool = False) -> None:
        arr = np.array([self.px(*p) for p in pts], np.int32)
        cv2.polylines(self.img, [arr], closed, 0, self.t(mm), cv2.LINE_AA)

    def rect(self, x0, y0, x1, y1, mm: float = 0.35) -> None:
        self.polyline([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], mm, closed=True)

    def fill_rect(self, x0, y0, x1, y1, shade: int = 255) -> None:
        cv2.rectangle(self.img, self.px(x0, y0), self.px(x1, y1), shade, -1)

    def circle(self, c, r: float, mm: float = 0.35, fill: bool = False) -> None:
        cv2.circle(self.img, self.px(*c), int(round(_mm(r, self.dpi))), 0, -1 if fill else self.t(mm), cv2.LINE_AA)

    def arc(self, c, r: float, a0: float, a1: float, mm: float = 0.25) -> None:
        rr = int(round(_mm(r, self.dpi)))
        cv2.ellipse(self.img, self.px(*c), (rr, rr), 0, a0, a1, 0, self.t(mm), cv2.LINE_AA)

    def dashed(self, p, q, mm: float = 0.25, pattern=(8.0, 1.5, 1.0, 1.5)) -> None:
        """Dash-dot by default (centre lines); pattern alternates drawn / gap lengths in mm."""
        p, q = np.asarray(p, float), np.asarray(q, float)
        length = float(np.linalg.norm(q - p))
        d = (q - p) / max(length, 1e-9)
        pos, k = 0.0, 0
        while pos < length:
            seg = pattern[k % len(pattern)]
            if k % 2 == 0:
                self.line(p + d * pos, p + d * min(length, pos + seg), mm)
            pos += seg
            k += 1

    def arrow_head(self, tip, direction, size: float = 2.5) -> None:
        tip, d = np.asarray(tip, float), np.asarray(direction, float)
        d = d / np.linalg.norm(d)
        n = np.array([-d[1], d[0]])
        base = tip - d * size
        pts = np.array([self.px(*tip), self.px(*(base + n * size * 0.18)), self.px(*(base - n * size * 0.18))], np.int32)
        cv2.fillPoly(self.img, [pts], 0, cv2.LINE_AA)

    def dimension(self, p, q, offset: float, label: str, text_mm: float = 2.8) -> None:
        """Extension lines, a dimension line with arrowheads on both ends and its value."""
        p, q = np.asarray(p, float), np.asarray(q, float)
        d = (q - p) / np.linalg.norm(q - p)
        n = np.array([-d[1], d[0]]) * (1 if offset >= 0 else -1)
        off = abs(offset)
        self.line(p + n * 1.0, p + n * (off + 2.0), 0.18)
        self.line(q + n * 1.0, q + n * (off + 2.0), 0.18)
        a, b = p + n * off, q + n * off
        self.line(a, b, 0.18)
        self.arrow_head(a, a - b)
        self.arrow_head(b, b - a)
        mid = (a + b) / 2 + n * (text_mm * 0.9)
        self.text(mid, label, text_mm, anchor="mm")

    def hatch(self, poly, spacing: float = 2.0, angle: float = 45.0, mm: float = 0.18) -> None:
        """Parallel hatching clipped to a polygon (mm coordinates)."""
        arr = np.array([self.px(*p) for p in poly], np.int32)
        x, y, w, h = cv2.boundingRect(arr)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [arr - [x, y]], 255)
        layer = np.full((h, w), 255, np.uint8)
        step = _mm(spacing, self.dpi)
        a = math.radians(angle)
        d = np.array([math.cos(a), -math.sin(a)])
        n = np.array([-d[1], d[0]])
        diag = math.hypot(w, h)
        centre = np.array([w / 2, h / 2])
        for k in range(-int(diag / step) - 1, int(diag / step) + 2):
            c = centre + n * k * step
            p0, p1 = c - d * diag, c + d * diag
            cv2.line(layer, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 0, self.t(mm), cv2.LINE_AA)
        region = self.img[y:y + h, x:x + w]
        np.minimum(region, np.where(mask > 0, layer, 255).astype(np.uint8), out=region)

    def text(self, at, label: str, size_mm: float, *, bold: bool = False, anchor: str = "ls") -> None:
        self.texts.append((float(at[0]), float(at[1]), _nfc(label), size_mm, bold, anchor))

    def render(self) -> np.ndarray:
        img = Image.fromarray(self.img)
        draw = ImageDraw.Draw(img)
        for x, y, label, size_mm, bold, anchor in self.texts:
            font = ImageFont.truetype(_font_path("sans", bold), max(6, int(round(_mm(size_mm * 1.4, self.dpi)))))
            draw.text(self.px(x, y), label, font=font, fill=0, anchor=anchor)
        return np.asarray(img, dtype=np.uint8).copy()


def _title_block(s: _Sheet, x1: float, y1: float, title: str, scale: str, number: str, rng) -> None:
    """Bottom-right title block ending at (x1, y1)."""
    w, h = 110.0, 32.0
    x0, y0 = x1 - w, y1 - h
    s.rect(x0, y0, x1, y1, 0.5)
    for y in (y0 + 12, y0 + 22):
        s.line((x0, y), (x1, y), 0.25)
    s.line((x0 + 70, y0 + 12), (x0 + 70, y1), 0.25)
    s.text((x0 + w / 2, y0 + 6), title, 3.5, bold=True, anchor="mm")
    s.text((x0 + 3, y0 + 18.5), f"Tỷ lệ {scale}", 2.8)
    s.text((x0 + 73, y0 + 18.5), f"Số: {number}", 2.8)
    s.text((x0 + 3, y0 + 28.5), f"Ngày: {int(rng.integers(1, 28)):02d}/{int(rng.integers(1, 13)):02d}/2025", 2.8)
    s.text((x0 + 73, y0 + 28.5), "Thiết kế: KTS", 2.8)


def _floor_plan(s: _Sheet, box, rng) -> tuple[str, str]:
    x0, y0, x1, y1 = box
    bw, bh = (x1 - x0) * 0.82, (y1 - y0) * 0.72
    bx, by = x0 + (x1 - x0) * 0.12, y0 + (y1 - y0) * 0.16
    wall = 2.0
    # Axes on the outer wall centre lines and one or two interior walls each way.
    xs = [bx] + sorted(bx + bw * f for f in rng.uniform(0.3, 0.7, int(rng.integers(1, 3)))) + [bx + bw]
    ys = [by] + [by + bh * float(rng.uniform(0.4, 0.6))] + [by + bh]
    if len(xs) == 4 and xs[2] - xs[1] < 15:
        xs.pop(2)
    outer = [(bx - wall / 2, by - wall / 2), (bx + bw + wall / 2, by - wall / 2),
             (bx + bw + wall / 2, by + bh + wall / 2), (bx - wall / 2, by + bh + wall / 2)]
    inner = [(bx + wall / 2, by + wall / 2), (bx + bw - wall / 2, by + wall / 2),
             (bx + bw - wall / 2, by + bh - wall / 2), (bx + wall / 2, by + bh - wall / 2)]
    s.polyline(outer, 0.6, closed=True)
    s.polyline(inner, 0.6, closed=True)
    s.hatch([outer[0], outer[1], inner[1], inner[0]], 1.2)
    s.hatch([outer[2], outer[3], inner[3], inner[2]], 1.2)
    s.hatch([outer[1], outer[2], inner[2], inner[1]], 1.2)
    s.hatch([outer[3], outer[0], inner[0], inner[3]], 1.2)
    half = 0.6
    for x in xs[1:-1]:
        s.line((x - half, by + wall / 2), (x - half, by + bh - wall / 2), 0.45)
        s.line((x + half, by + wall / 2), (x + half, by + bh - wall / 2), 0.45)
    s.line((bx + wall / 2, ys[1] - half), (bx + bw - wall / 2, ys[1] - half), 0.45)
    s.line((bx + wall / 2, ys[1] + half), (bx + bw - wall / 2, ys[1] + half), 0.45)
    # Doors: a gap in the wall, the leaf and its swing arc.
    for x in xs[:-1]:
        dx = x + float(rng.uniform(3, 6))
        s.fill_rect(dx, ys[1] - half - 0.3, dx + 8, ys[1] + half + 0.3)
        s.line((dx, ys[1]), (dx, ys[1] - 8), 0.3)
        s.arc((dx, ys[1]), 8, -90, 0, 0.2)
    # Windows in the outer walls: a gap with three thin lines.
    for x in xs[:-1]:
        wx = x + float(rng.uniform(5, 9))
        for yy in (by, by + bh):
            s.fill_rect(wx, yy - wall / 2 - 0.2, wx + 10, yy + wall / 2 + 0.2)
            for k in (-1, 0, 1):
                s.line((wx, yy + k * wall / 2), (wx + 10, yy + k * wall / 2), 0.18)
            s.line((wx, yy - wall / 2), (wx, yy + wall / 2), 0.25)
            s.line((wx + 10, yy - wall / 2), (wx + 10, yy + wall / 2), 0.25)
    # Grid axes with bubbles, and dimension chains.
    for i, x in enumerate(xs):
        s.dashed((x, by - 16), (x, by + bh + 4))
        s.circle((x, by - 20), 3.5, 0.25)
        s.text((x, by - 20), str(i + 1), 3.0, anchor="mm")
    for i, y in enumerate(ys):
        s.dashed((bx - 16, y), (bx + bw + 4, y))
        s.circle((bx - 20, y), 3.5, 0.25)
        s.text((bx - 20, y), "ABC"[i], 3.0, anchor="mm")
    for a, b in zip(xs, xs[1:]):
        s.dimension((a, by - wall / 2), (b, by - wall / 2), -7, f"{round(b - a) * 100}")
    s.dimension((xs[0], by - wall / 2), (xs[-1], by - wall / 2), -12, f"{round(bw) * 100}")
    for a, b in zip(ys, ys[1:]):
        s.dimension((bx - wall / 2, a), (bx - wall / 2, b), 7, f"{round(b - a) * 100}")
    rooms = ["P.KHÁCH", "P.NGỦ 1", "BẾP", "WC", "P.NGỦ 2", "KHO"]
    k = 0
    for ya, yb in zip(ys, ys[1:]):
        for xa, xb in zip(xs, xs[1:]):
            s.text(((xa + xb) / 2, (ya + yb) / 2), rooms[k % len(rooms)], 2.5, anchor="mm")
            k += 1
    return "BẢN VẼ MẶT BẰNG TẦNG 1", "1:100"


def _mechanical_part(s: _Sheet, box, rng) -> tuple[str, str]:
    x0, y0, x1, y1 = box
    cx, cy = x0 + (x1 - x0) * 0.28, y0 + (y1 - y0) * 0.46
    r_out = min(x1 - x0, y1 - y0) * float(rng.uniform(0.27, 0.32))
    r_hub, r_bore, r_bolt = r_out * 0.45, r_out * 0.25, r_out * 0.75
    n_holes = int(rng.choice([4, 6, 8]))
    r_hole = r_out * 0.08
    s.circle((cx, cy), r_out, 0.6)
    s.circle((cx, cy), r_hub, 0.5)
    s.circle((cx, cy), r_bore, 0.6)
    s.dashed((cx - r_out - 6, cy), (cx + r_out + 6, cy))
    s.dashed((cx, cy - r_out - 6), (cx, cy + r_out + 6))
    for k in range(n_holes):
        a = 2 * math.pi * k / n_holes + math.pi / n_holes
        hx, hy = cx + r_bolt * math.cos(a), cy + r_bolt * math.sin(a)
        s.circle((hx, hy), r_hole, 0.5)
        s.line((hx - r_hole * 1.5, hy), (hx + r_hole * 1.5, hy), 0.18)
        s.line((hx, hy - r_hole * 1.5), (hx, hy + r_hole * 1.5), 0.18)
    # Bolt circle drawn as dash-dot arcs.
    steps = 48
    for k in range(0, steps, 2):
        s.arc((cx, cy), r_bolt, 360 * k / steps, 360 * (k + 1.4) / steps, 0.18)
    # Keyway in the bore.
    kw = r_bore * 0.5
    s.rect(cx - kw / 2, cy - r_bore - kw * 0.6, cx + kw / 2, cy - r_bore + 0.5, 0.4)
    # Section view to the right: flange + hub profile, hatched except the bore.
    sx = cx + r_out + 30
    t_fl, t_hub = r_out * 0.3, r_out * 0.55
    top = [(sx, cy - r_out), (sx + t_fl, cy - r_out), (sx + t_fl, cy - r_hub), (sx + t_fl + t_hub, cy - r_hub),
           (sx + t_fl + t_hub, cy - r_bore), (sx, cy - r_bore)]
    bottom = [(x, 2 * cy - y) for x, y in top]
    for prof in (top, bottom):
        s.polyline(prof, 0.6, closed=True)
        s.hatch(prof, 1.8, 45)
    s.dashed((sx - 6, cy), (sx + t_fl + t_hub + 6, cy))
    hole_y = cy - r_bolt
    s.dashed((sx - 3, hole_y), (sx + t_fl + 3, hole_y))
    s.fill_rect(sx + 0.4, hole_y - r_hole, sx + t_fl - 0.4, hole_y + r_hole)
    s.line((sx, hole_y - r_hole), (sx + t_fl, hole_y - r_hole), 0.4)
    s.line((sx, hole_y + r_hole), (sx + t_fl, hole_y + r_hole), 0.4)
    d_out = int(round(r_out * 2 * 2.5 / 5) * 5)
    s.dimension((cx - r_out, cy + r_out), (cx + r_out, cy + r_out), 8, f"Ø{d_out}")
    s.dimension((cx - r_bore, cy - r_out), (cx + r_bore, cy - r_out), -6, f"Ø{int(d_out * r_bore / r_out)}")
    s.dimension((sx, cy + r_out), (sx + t_fl, cy + r_out), 8, f"{int(d_out * t_fl / r_out / 2)}")
    s.dimension((sx, cy + r_out), (sx + t_fl + t_hub, cy + r_out), 16, f"{int(d_out * (t_fl + t_hub) / r_out / 2)}")
    s.dimension((sx + t_fl + t_hub, cy - r_hub), (sx + t_fl + t_hub, cy + r_hub), -8,
                f"Ø{int(d_out * r_hub / r_out)}")
    s.text((cx + r_out * 0.55, cy - r_out - 4), f"{n_holes} lỗ Ø{int(d_out * r_hole / r_out)}", 2.8)
    s.text((sx, cy - r_out - 6), "A-A", 3.5, bold=True)
    return "CHI TIẾT MẶT BÍCH", "1:2"


def _site_plan(s: _Sheet, box, rng) -> tuple[str, str]:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    # Contour lines across the whole area.
    xs = np.linspace(x0 + 5, x1 - 5, 60)
    for k in range(int(rng.integers(3, 5))):
        base = y0 + h * (0.12 + 0.16 * k)
        ys = base + 6 * np.sin(xs / w * float(rng.uniform(3, 6)) + float(rng.uniform(0, 6))) + 3 * np.sin(xs / 7)
        s.polyline(list(zip(xs, ys)), 0.18)
    # Road along the bottom with a dashed centre line.
    ry = y0 + h * 0.86
    s.line((x0 + 5, ry - 7), (x1 - 5, ry - 7), 0.5)
    s.line((x0 + 5, ry + 7), (x1 - 5, ry + 7), 0.5)
    s.dashed((x0 + 5, ry), (x1 - 5, ry), 0.25, (6.0, 3.0))
    # The parcel: an irregular polygon with its edge lengths.
    px0, px1 = x0 + w * 0.12, x0 + w * 0.62
    py0, py1 = y0 + h * 0.12, ry - 12
    jit = lambda: float(rng.uniform(-6, 6))  # noqa: E731
    parcel = [(px0 + jit(), py0 + jit()), ((px0 + px1) / 2 + jit(), py0 - 4 + jit()), (px1 + jit(), py0 + jit()),
              (px1 + jit(), py1), (px0 + jit(), py1)]
    s.polyline(parcel, 0.7, closed=True)
    for a, b in zip(parcel, parcel[1:] + parcel[:1]):
        length = math.dist(a, b) * 5 / 10
        mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        s.text((mid[0] + 2, mid[1] - 2), f"{length:.2f}", 2.5)
    s.dimension((x1 - 30, ry - 7), (x1 - 30, ry + 7), -4, "13.0")
    s.dimension(parcel[4], parcel[3], 20, f"{math.dist(parcel[4], parcel[3]) * 5 / 10:.1f}")
    for i, p in enumerate(parcel):
        s.circle(p, 0.8, fill=True)
        s.text((p[0] + 1.5, p[1] + 4), str(i + 1), 2.5)
    # Buildings: hatched rectangles inside the parcel.
    for k in range(int(rng.integers(2, 4))):
        bx = px0 + 10 + (px1 - px0 - 20) * (k / 3 + float(rng.uniform(0, 0.05)))
        by = py0 + 12 + float(rng.uniform(0, 20))
        bw, bh = float(rng.uniform(18, (px1 - px0) / 3 - 4)), float(rng.uniform(20, 35))
        rect = [(bx, by), (bx + bw, by), (bx + bw, by + bh), (bx, by + bh)]
        s.fill_rect(bx, by, bx + bw, by + bh)
        s.polyline(rect, 0.5, closed=True)
        s.hatch(rect, 2.5, 45 if k % 2 else 135)
    # Trees and a north arrow.
    for _ in range(int(rng.integers(6, 11))):
        tx, ty = float(rng.uniform(px0 + 5, px1 - 5)), float(rng.uniform(py1 - 20, py1 - 5))
        r = float(rng.uniform(2.5, 4.5))
        s.circle((tx, ty), r, 0.25)
        s.circle((tx, ty), 0.4, fill=True)
    nx, ny = x0 + w * 0.8, y0 + h * 0.15
    s.circle((nx, ny), 8, 0.3)
    pts = np.array([s.px(nx, ny - 10), s.px(nx + 3, ny + 5), s.px(nx, ny + 2), s.px(nx - 3, ny + 5)], np.int32)
    cv2.fillPoly(s.img, [pts], 0, cv2.LINE_AA)
    s.text((nx, ny - 13), "N", 3.5, bold=True, anchor="ms")
    return "MẶT BẰNG TỔNG THỂ", "1:500"


def drawing_page(*, dpi: int, paper: str = "A4", seed: int = 0) -> np.ndarray:
    """A synthetic engineering drawing on a landscape sheet: frame, title block, line art, little text.

    seed % 3 picks the variant: 0 floor plan, 1 mechanical part, 2 site plan.
    """
    rng = np.random.default_rng(seed)
    s = _Sheet(dpi=dpi, paper=paper)
    fx0, fy0, fx1, fy1 = 20.0, 10.0, s.w_mm - 10, s.h_mm - 10
    s.rect(fx0, fy0, fx1, fy1, 0.7)
    s.rect(5, 5, s.w_mm - 5, s.h_mm - 5, 0.25)
    # Content area: above the title block on the right, full height on the left.
    box = (fx0 + 5, fy0 + 5, fx1 - 5, fy1 - 38)
    variant = seed % 3
    title, scale = (_floor_plan, _mechanical_part, _site_plan)[variant](s, box, rng)
    _title_block(s, fx1, fy1, title, scale, f"{('KT', 'CK', 'QH')[variant]}-{int(rng.integers(1, 20)):02d}", rng)
    return s.render()


# --- Forms with ruled tables ---------------------------------------------------------------------------------------

_TABLE_FORMS = [
    ("TỜ KHAI THÀNH VIÊN HỘ GIA ĐÌNH", 7, ["STT", "Họ và tên", "Ngày sinh", "Quan hệ với chủ hộ"],
     [["Nguyễn Văn Hùng", "12/04/1968", "Chủ hộ"], ["Trần Thị Lý", "03/09/1971", "Vợ"],
      ["Nguyễn Văn Tâm", "21/01/1995", "Con"], ["Nguyễn Thị Thảo", "15/06/1998", "Con"],
      ["Nguyễn Minh Đức", "30/11/2003", "Con"], ["Lê Thị Hằng", "08/02/1945", "Mẹ"],
      ["Nguyễn Gia Bảo", "19/07/2020", "Cháu"], ["Phạm Thị Yến", "25/12/1996", "Con dâu"],
      ["Nguyễn Văn Lộc", "02/03/1999", "Con"]]),
    ("BẢNG KÊ THÀNH PHẦN HỒ SƠ", 3, ["STT", "Tên giấy tờ", "Số lượng", "Ghi chú"],
     [["Đơn đề nghị cấp đổi giấy chứng nhận", "01", "Bản chính"], ["Giấy chứng nhận đã cấp", "01", "Bản gốc"],
      ["Căn cước công dân", "01", "Bản sao"], ["Sơ đồ thửa đất", "01", "Bản chính"],
      ["Biên bản kiểm tra hiện trạng", "01", "Bản chính"], ["Giấy ủy quyền", "01", "Có chứng thực"],
      ["Tờ khai lệ phí trước bạ", "02", "Theo mẫu"], ["Hợp đồng chuyển nhượng", "01", "Bản sao"],
      ["Biên lai nộp phí", "01", "Bản chính"]]),
    ("TỜ KHAI ĐĂNG KÝ THƯỜNG TRÚ", 8, ["STT", "Nội dung", "Thông tin kê khai"],
     [["Họ, chữ đệm và tên", "Lê Văn Cường"], ["Ngày, tháng, năm sinh", "14/03/1987"],
      ["Số định danh cá nhân", "040187003521"], ["Dân tộc, tôn giáo", "Kinh, không"],
      ["Nơi thường trú hiện nay", "Xóm 5, xã Nghi Phong"], ["Nơi đăng ký mới", "Khối 7, phường Hưng Dũng"],
      ["Nghề nghiệp, nơi làm việc", "Giáo viên, trường Tiểu học"], ["Số điện thoại liên hệ", "0912 345 678"],
      ["Quan hệ với chủ hộ", "Con"]]),
]


def table_form_page(*, dpi: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """An A4 form (tờ khai) with motto, title, a paragraph and a ruled table of Vietnamese text.

    The ground truth has the text lines, then one line per table row with its cells joined by spaces.
    """
    rng = np.random.default_rng(seed)
    title, para, header, rows = _TABLE_FORMS[int(rng.integers(len(_TABLE_FORMS)))]
    n_rows = int(rng.integers(5, min(10, len(rows)) + 1))
    rows = [[str(i + 1)] + [_nfc(c) for c in r] for i, r in enumerate(rows[:n_rows])]
    header = [_nfc(c) for c in header]
    family = str(rng.choice(["serif", "sans"]))
    font_pt = 12.0
    page, gt = render_page(text_lines_or_paragraphs=NATIONAL_MOTTO + [Heading(title), VIETNAMESE_PARAGRAPHS[para]],
                           dpi=dpi, paper="A4", font=family, font_pt=font_pt, seed=int(rng.integers(1 << 31)))
    h, w = page.shape
    size_px = max(6, round(font_pt / 72 * dpi))
    body = ImageFont.truetype(_font_path(family, False), size_px)
    bold = ImageFont.truetype(_font_path(family, True), size_px)
    side = _mm(22, dpi)
    pad = _mm(2, dpi)
    widths = [max(bold.getlength(header[c]), *(body.getlength(r[c]) for r in rows)) + 2 * pad for c in range(len(header))]
    spare = (w - 2 * side) - sum(widths)
    assert spare > 0, "table too wide for the page"
    widths = [wd + spare * (wd / sum(widths[1:])) if c else wd for c, wd in enumerate(widths)]
    row_h = size_px * 1.9
    ink = np.flatnonzero((page < 128).any(axis=1))
    top = ink[-1] + size_px * 1.5
    img = Image.fromarray(page)
    draw = ImageDraw.Draw(img)
    line_w = max(1, round(_mm(0.25, dpi)))
    xs = np.concatenate([[side], side + np.cumsum(widths)])
    n = len(rows) + 1
    assert top + n * row_h < h - _mm(20, dpi), "table does not fit"
    for i in range(n + 1):
        y = top + i * row_h
        draw.line([(xs[0], y), (xs[-1], y)], fill=0, width=line_w)
    for x in xs:
        draw.line([(x, top), (x, top + n * row_h)], fill=0, width=line_w)
    ascent, descent = body.getmetrics()
    for i, cells in enumerate([header] + rows):
        baseline = top + i * row_h + row_h / 2 + (ascent - descent) / 2
        for c, text in enumerate(cells):
            if i == 0:
                draw.text(((xs[c] + xs[c + 1]) / 2, baseline), text, font=bold, fill=0, anchor="ms")
            elif c == 0:
                draw.text(((xs[c] + xs[c + 1]) / 2, baseline), text, font=body, fill=0, anchor="ms")
            else:
                draw.text((xs[c] + pad, baseline), text, font=body, fill=0, anchor="ls")
    lines = [gt, "", " ".join(header)] + [" ".join(r) for r in rows]
    # Closing: a declaration line under the table.
    closing = _nfc("Tôi cam đoan những nội dung kê khai trên là đúng sự thật.")
    y = top + n * row_h + size_px * 2.2
    if y < h - _mm(25, dpi):
        draw.text((side, y), closing, font=body, fill=0, anchor="ls")
        lines += ["", closing]
    return np.asarray(img, dtype=np.uint8).copy(), _nfc("\n".join(lines))


def _centred(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, font: ImageFont.FreeTypeFont) -> None:
    draw.text((x, y), _nfc(text), font=font, fill=0, anchor="ms")


def decision_page(*, dpi: int, organ: tuple[str, ...], number: str, place_date: str, title: str, subject: str,
                  body: list[str], seed: int = 0) -> np.ndarray:
    """A Decree 30 layout: the organ and "Số: ..." top left, the national heading, motto and
    "<place>, ngày ..." top right, then the centred title, its subject and the text."""
    rng = np.random.default_rng(seed)
    height, width = paper_px(dpi=dpi, paper="A4")
    size = round(13 / 72 * dpi)
    regular = ImageFont.truetype(_font_path("serif", False), size)
    bold = ImageFont.truetype(_font_path("serif", True), size)
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    line = round(size * 1.4)
    left, right = width * 0.25, width * 0.64
    y = _mm(rng.uniform(18, 22), dpi) + size
    for n, text in enumerate(organ):
        _centred(draw, left, y + n * line, text, bold if n == len(organ) - 1 else regular)
    _centred(draw, right, y, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", bold)
    _centred(draw, right, y + line, "Độc lập - Tự do - Hạnh phúc", bold)
    y += max(len(organ), 2) * line + line
    _centred(draw, left, y, f"Số: {number}", regular)
    _centred(draw, right, y, place_date, regular)
    y += 3 * line
    _centred(draw, width / 2, y, title, bold)
    _centred(draw, width / 2, y + line, subject, bold)
    y += 3 * line
    side = _mm(25, dpi)
    for paragraph in body:
        for text in _wrap(_nfc(paragraph), regular, width - 2 * side):
            draw.text((side, y), text, font=regular, fill=0, anchor="ls")
            y += line
        y += line // 2
    return np.asarray(img, dtype=np.uint8).copy()


def id_card_page(*, dpi: int, name: str, number: str, seed: int = 0) -> np.ndarray:
    """The front of a citizen identity card (85.6 x 54 mm), scanned on its own as a small page."""
    rng = np.random.default_rng(seed)
    width, height = round(_mm(85.6, dpi)), round(_mm(54, dpi))
    small = ImageFont.truetype(_font_path("sans", True), round(7 / 72 * dpi))
    regular = ImageFont.truetype(_font_path("sans", False), round(7.5 / 72 * dpi))
    title = ImageFont.truetype(_font_path("sans", True), round(10 / 72 * dpi))
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((2, 2, width - 3, height - 3), radius=round(_mm(3, dpi)), outline=90, width=3)
    x = width * 0.62
    line = round(_mm(4.2, dpi))
    y = round(_mm(6, dpi))
    _centred(draw, x, y, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", small)
    _centred(draw, x, y + line, "Độc lập - Tự do - Hạnh phúc", small)
    _centred(draw, x, y + round(2.4 * line), "CĂN CƯỚC CÔNG DÂN", title)
    photo = (round(_mm(4, dpi)), round(_mm(16, dpi)), round(_mm(24, dpi)), round(_mm(44, dpi)))
    draw.rectangle(photo, fill=int(rng.integers(150, 190)))
    tx = round(_mm(27, dpi))
    for n, text in enumerate([f"Số định danh: {number}", f"Họ và tên: {name}", "Ngày sinh: 14/03/1987",
                              "Giới tính: Nữ   Quốc tịch: Việt Nam"]):
        draw.text((tx, y + round((3.6 + n) * line)), _nfc(text), font=regular, fill=0, anchor="ls")
    return np.asarray(img, dtype=np.uint8).copy()


def stamp_seal(rgb: np.ndarray, *, centre: tuple[int, int], dpi: int, size_mm: float = 38.0, seed: int = 0,
               ink: tuple[int, int, int] = (205, 35, 45), text: str = "PHƯỜNG BẾN THỦY * THÀNH PHỐ VINH *") -> np.ndarray:
    """A round red seal stamped over whatever is at `centre` (x, y): multiply blend, so text under it stays black."""
    rng = np.random.default_rng(seed)
    size = int(round(_mm(size_mm, dpi)))
    alpha = _stamp_mask(size, text=_nfc(text), rng=rng) * 0.85
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.5 * dpi / 300)
    out = rgb.astype(np.float32)
    x0, y0 = centre[0] - size // 2, centre[1] - size // 2
    tile = out[y0:y0 + size, x0:x0 + size]
    tile *= 1 - alpha[..., None] * (1 - np.array(ink, np.float32) / 255)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --- Drawings and near-drawings for the drawing detector (tests/test_drawings.py) ---------------------------------

def parts_list_drawing_page(*, dpi: int, seed: int = 0) -> np.ndarray:
    """An A4 assembly drawing whose right half is a dense parts list: as much text as a text page."""
    rng = np.random.default_rng(seed)
    s = _Sheet(dpi=dpi, paper="A4")
    fx0, fy0, fx1, fy1 = 20.0, 10.0, s.w_mm - 10, s.h_mm - 10
    s.rect(fx0, fy0, fx1, fy1, 0.7)
    _mechanical_part(s, (fx0 + 5, fy0 + 5, fx0 + 140, fy1 - 38), rng)
    # The parts list: 22 ruled rows of position, name, quantity and material, 4 mm apart.
    x0, x1, top = fx1 - 112, fx1, fy0
    for row in range(23):
        y = top + 4.0 * row
        s.line((x0, y), (x1, y), 0.18)
        if row:
            name = ("Bulông M8x25", "Đai ốc M8", "Vòng đệm 8", "Mặt bích DN50", "Gioăng cao su", "Trục Ø20")[row % 6]
            for x, label in ((x0 + 1.5, f"{row:02d}"), (x0 + 10, name), (x0 + 62, f"{1 + row % 4}"),
                             (x0 + 72, ("CT3", "C45", "SUS304", "Cao su")[row % 4])):
                s.text((x, y - 1.0), label, 2.2)
    for x in (x0, x0 + 8, x0 + 60, x0 + 70, x1):
        s.line((x, top), (x, top + 4.0 * 22), 0.18)
    _title_block(s, fx1, fy1, "CỤM MẶT BÍCH", "1:2", f"CK-{int(rng.integers(20, 99))}", rng)
    return s.render()


def land_certificate_page(*, dpi: int, seed: int = 0) -> np.ndarray:
    """A land-use certificate page (giấy chứng nhận): text, and a small plot sketch with its side lengths."""
    body = NATIONAL_MOTTO + [Heading("GIẤY CHỨNG NHẬN QUYỀN SỬ DỤNG ĐẤT"), *VIETNAMESE_PARAGRAPHS[:2]]
    page, _ = render_page(text_lines_or_paragraphs=body, dpi=dpi, seed=seed)
    s = _Sheet(dpi=dpi, paper="A4")
    s.img = np.full_like(page, 255)  # portrait: the sketch goes in the lower half, 60 x 45 mm
    x0, y0 = 75.0, 215.0
    plot = [(x0, y0 + 5), (x0 + 52, y0), (x0 + 58, y0 + 40), (x0 + 4, y0 + 44)]
    s.polyline(plot, 0.35, closed=True)
    for (p, q), label in zip(zip(plot, plot[1:] + plot[:1]), ("18.25", "12.40", "17.90", "13.05"), strict=True):
        s.text(((p[0] + q[0]) / 2, (p[1] + q[1]) / 2 - 1.5), label, 2.5, anchor="mm")
    s.text((x0 + 28, y0 + 24), "Thửa 215", 2.8, anchor="mm")
    return np.minimum(page, s.render())
