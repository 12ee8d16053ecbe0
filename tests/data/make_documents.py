#!/usr/bin/env python3
"""Makes the office documents of tests/fixtures/documents/ (attachment text).

Run once by hand; its output is committed, so CI installs no office suite.
Needs (here only, never in CI):
    pip install python-docx openpyxl python-pptx reportlab msoffcrypto-tool
    apt-get install fonts-ipafont libreoffice-calc-nogui libreoffice-writer-nogui

    python3 tests/data/make_documents.py tests/fixtures/documents

Every document carries the Japanese words 社外秘 (confidential) and 売上報告
(sales report), the English phrase "confidential quarterly forecast", and one
English word of its own (MARKERS below), so a search can tell which document
of a mail it found. The PDFs embed a subset of the IPA Gothic font (Debian's
fonts-ipafont), as a Japanese office would.
"""

import os
import shutil
import subprocess
import sys
import tempfile

# The word only that document carries, by file name.
MARKERS = {
    "report.pdf": "aubergine",
    "report-libreoffice.pdf": "quince",
    "report.docx": "bergamot",
    "report.xlsx": "cardamom",
    "report.pptx": "damson",
    "report.xls": "elderflower",
}

JAPANESE = "社外秘：第3四半期の売上報告"
ENGLISH = "confidential quarterly forecast"
IPA_GOTHIC = "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf"


def pdf(path):
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(TTFont("IPAGothic", IPA_GOTHIC))
    # invariant=1: no creation time or random id, so a rerun gives the same bytes.
    c = canvas.Canvas(path, pagesize=A4, invariant=1)
    c.setFont("IPAGothic", 14)
    c.drawString(72, 760, JAPANESE)
    c.drawString(72, 736, f"{ENGLISH} ({MARKERS['report.pdf']})")
    c.drawString(72, 712, "営業部 各位：来期予算について")
    c.showPage()
    c.setFont("IPAGothic", 12)
    c.drawString(72, 760, "2ページ目：取扱注意")
    c.save()


def docx(path, marker):
    import docx
    from docx.oxml.ns import qn

    d = docx.Document()
    style = d.styles["Normal"]
    style.font.name = "IPAGothic"
    style.element.rPr.rFonts.set(qn("w:eastAsia"), "IPAGothic")
    d.add_heading(JAPANESE, level=1)
    d.add_paragraph(f"{ENGLISH} ({marker})")
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "部署"
    table.rows[0].cells[1].text = "営業部"
    d.sections[0].header.paragraphs[0].text = "取扱注意"
    d.save(path)


def xlsx(path):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "売上"
    ws.append([JAPANESE])
    ws.append([ENGLISH, MARKERS["report.xlsx"]])
    ws.append(["四半期", "金額"])
    ws.append(["Q3", 1234567])
    wb.create_sheet("予算").append(["来期予算", 2000000])
    wb.save(path)


def pptx(path):
    from pptx import Presentation

    p = Presentation()
    s = p.slides.add_slide(p.slide_layouts[1])
    s.shapes.title.text = JAPANESE
    s.placeholders[1].text = f"{ENGLISH} ({MARKERS['report.pptx']})"
    s.notes_slide.notes_text_frame.text = "発表者メモ：取扱注意"
    s2 = p.slides.add_slide(p.slide_layouts[1])
    s2.shapes.title.text = "来期予算"
    s2.placeholders[1].text = "営業部"
    p.save(path)


def libreoffice(src, fmt, out_path):
    """Converts src with LibreOffice (headless) to fmt, written to out_path."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        sys.exit("LibreOffice (soffice) is needed for the XLS and the second PDF")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [soffice, "--headless", f"-env:UserInstallation=file://{tmp}/profile",
             "--convert-to", fmt, "--outdir", tmp, src],
            check=True, stdout=subprocess.DEVNULL,
        )
        base = os.path.splitext(os.path.basename(src))[0]
        shutil.move(os.path.join(tmp, f"{base}.{fmt}"), out_path)


def corrupt_pdf(path, good):
    """A PDF header and trailer around damaged objects: what a truncated or
    tampered attachment looks like. No reader can get text from it."""
    with open(good, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:9])
        f.write(b"1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\nendobj\n")
        f.write(bytes((i * 37 + 11) % 256 for i in range(2048)))
        f.write(b"\nxref\n0 1\n0000000000 65535 f \ntrailer\n<< /Root 1 0 R >>\n")
        f.write(b"startxref\n999999\n%%EOF\n")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/documents"
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)
    pdf(p("report.pdf"))
    docx(p("report.docx"), MARKERS["report.docx"])
    xlsx(p("report.xlsx"))
    pptx(p("report.pptx"))
    with tempfile.TemporaryDirectory() as tmp:
        # LibreOffice's own PDF export (its font subsetting and ToUnicode
        # maps differ from reportlab's): from a DOCX with its own marker.
        src = os.path.join(tmp, "report-libreoffice.docx")
        docx(src, MARKERS["report-libreoffice.pdf"])
        libreoffice(src, "pdf", p("report-libreoffice.pdf"))
        # Legacy Excel (BIFF8) as Excel 97-2003 would save it.
        src = os.path.join(tmp, "report.xlsx")
        xlsx(src)
        import openpyxl

        wb = openpyxl.load_workbook(src)
        wb["売上"]["B2"] = MARKERS["report.xls"]
        wb.save(src)
        libreoffice(src, "xls", p("report.xls"))
    corrupt_pdf(p("corrupt.pdf"), p("report.pdf"))
    # A DOCX with a password to open (Office's "Encrypt with Password"):
    # an OLE file holding the encrypted package. Password: himitsu.
    import msoffcrypto.format.ooxml

    with open(p("report.docx"), "rb") as src, open(p("encrypted.docx"), "wb") as out:
        msoffcrypto.format.ooxml.OOXMLFile(src).encrypt("himitsu", out)
    # Plain text in Shift_JIS, as a Japanese Windows editor saves it.
    with open(p("memo-sjis.txt"), "wb") as f:
        f.write(f"{JAPANESE}\r\n{ENGLISH} (fennel)\r\n半角ｶﾀｶﾅも含む\r\n".encode("shift_jis"))
    for name in sorted(os.listdir(out)):
        print(f"{os.path.getsize(p(name)):>8}  {name}")


if __name__ == "__main__":
    main()
