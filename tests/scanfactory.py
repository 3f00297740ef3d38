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


def to_bitonal(gray: np.ndarray, *, threshold: int | None = None) -> np.ndarray:
    """Return a uint8 0/255 image (Otsu threshold unless one is given)."""
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_RGB2GRAY)
    if threshold is None:
        _, out = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        out = np.where(gray > threshold, 255, 0).astype(np.uint8)
    return out


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
