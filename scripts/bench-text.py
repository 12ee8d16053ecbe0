#!/usr/bin/env python3
"""Attachment text extraction time per attachment type and size
(BENCHMARKS.md, "Attachment text extraction").

Times the reader as the collector runs it: one `kiroku-collector
extract-text <format> …` subprocess per attachment (process start, reading
stdin, extraction, writing the text), on the committed small documents of
tests/fixtures/documents/ and on large ones made here (needs, here only:
pip install python-docx openpyxl python-pptx reportlab; apt-get install
fonts-ipafont libreoffice-calc-nogui). Plain text is read in the
collector's own process, so its row is the same subprocess as an upper
bound.

usage: scripts/bench-text.py [BINARY] [WORKDIR]
    BINARY   default target/release/kiroku-collector
    WORKDIR  default /work/bench-data/text (large documents, made once)
Run it on a quiet machine: flock /work/bench.lock scripts/bench-text.py
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "data"))
import make_documents as md  # noqa: E402

LINE = "社外秘：第3四半期の売上報告 confidential quarterly forecast 営業部 各位"


def large_pdf(path, pages):
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(TTFont("IPAGothic", md.IPA_GOTHIC))
    c = canvas.Canvas(path, pagesize=A4, invariant=1)
    for p in range(pages):
        c.setFont("IPAGothic", 10)
        for i in range(60):
            c.drawString(40, 800 - i * 13, f"{p}-{i} {LINE}")
        c.showPage()
    c.save()


def large_docx(path, paragraphs):
    import docx

    d = docx.Document()
    for i in range(paragraphs):
        d.add_paragraph(f"{i} {LINE}")
    d.save(path)


def large_xlsx(path, rows):
    import openpyxl

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("売上")
    for i in range(rows):
        ws.append([i, LINE, i * 1000, "営業部", "Q3"])
    wb.save(path)


def large_pptx(path, slides):
    from pptx import Presentation

    p = Presentation()
    for i in range(slides):
        s = p.slides.add_slide(p.slide_layouts[1])
        s.shapes.title.text = f"{i} 売上報告"
        s.placeholders[1].text = "\n".join(f"{j} {LINE}" for j in range(10))
    p.save(path)


def large_text(path, lines):
    with open(path, "wb") as f:
        f.write("".join(f"{i} {LINE}\r\n" for i in range(lines)).encode("shift_jis"))


def make_large(work):
    os.makedirs(work, exist_ok=True)
    p = lambda n: os.path.join(work, n)
    if not os.path.exists(p("large.pdf")):
        large_pdf(p("large.pdf"), 100)
        large_docx(p("large.docx"), 5000)
        large_xlsx(p("large.xlsx"), 8000)
        large_pptx(p("large.pptx"), 200)
        large_text(p("large-sjis.txt"), 8000)
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "large.xlsx")
            shutil.copy(p("large.xlsx"), src)
            md.libreoffice(src, "xls", p("large.xls"))
    return p


def timed(binary, fmt, data, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run(
            [binary, "extract-text", fmt, str(1 << 20), str(1 << 30), "10"],
            input=data, capture_output=True, check=True,
        ).stdout
        times.append(time.perf_counter() - t)
    status, _, text = out.partition(b"\n")
    return statistics.median(times), status.decode(), len(text)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/kiroku-collector")
    work = sys.argv[2] if len(sys.argv) > 2 else "/work/bench-data/text"
    small = lambda n: os.path.join(ROOT, "tests/fixtures/documents", n)
    large = make_large(work)
    cases = [
        ("PDF", "pdf", small("report.pdf"), large("large.pdf")),
        ("DOCX", "ooxml", small("report.docx"), large("large.docx")),
        ("XLSX", "ooxml", small("report.xlsx"), large("large.xlsx")),
        ("PPTX", "ooxml", small("report.pptx"), large("large.pptx")),
        ("XLS", "xls", small("report.xls"), large("large.xls")),
        ("text (Shift_JIS)", "plain", small("memo-sjis.txt"), large("large-sjis.txt")),
    ]
    print("| type | file | size | median of 20 (ms) | text kept | status |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for kind, fmt, *files in cases:
        for path in files:
            with open(path, "rb") as f:
                data = f.read()
            secs, status, text = timed(binary, fmt, data, 20)
            print(f"| {kind} | {os.path.basename(path)} | {len(data):,} B | "
                  f"{secs * 1000:.1f} | {text:,} B | {status} |")


if __name__ == "__main__":
    main()
