"""Writes the hand-built MIME test messages of tests/data/mime/defects and
tests/data/mime/evasion, with their expectations (expect.json), for
tests/tests/mime_recovery.rs. The messages are committed; run this again
only to change them (python3 tests/data/mime/make_cases.py), then review
the diff.

defects/: one message per MIME defect of issue 17 that used to hide an
attachment (or an address) from the record. Their expectations are written
by hand from what a mail client shows; where Python's `email` package
(policy default) reads the message differently the case says so and why.

evasion/: messages modelled on published MIME-evasion research (ambiguous
boundaries, duplicate and conflicting headers, transfer encodings that
parsers decode differently, parts hidden in the preamble or epilogue,
parameter quoting and RFC 2231 tricks). Their expectation is Python's
reading (the reference an outside evaluator compares Kiroku with) unless
the case gives another one with the reason.

expect.json: {"cases": [{
  "file":            message file name,
  "what":            what the case is about (one line),
  "attachments":     [{"filename": the display name, or a list of the
                                   names that are acceptable as display
                                   name (the case is ambiguous by design),
                       "name_candidates": every name the record must list
                                   (order free; absent: not checked),
                       "sha256", "size": of the decoded file,
                       "transfer_encoding": optional}],
  "tags":            tags the event must carry,
  "absent_tags":     tags it must not carry,
  "to", "subject":   optional, the record's To addresses and subject,
  "python":          {"filenames": [...], "sha256": [...]} Python's reading,
  "python_differs":  why the expectation differs from Python (or absent),
  "open":            why Kiroku does not yet record what the expectation says
                     (a known gap: the test checks it still differs, so the
                     mark is removed once it is fixed)
}]}
"""
import base64
import binascii
import email
import email.policy
import hashlib
import json
import os
import sys

sys.dont_write_bytecode = True

# Known gaps of the walker (cases whose record still differs from the
# expectation), by corpus and case number, with the reason.
OPEN = {"evasion": {
  "05": "two plain boundary parameters, the parts use the second: the walker follows one boundary per multipart; following every candidate boundary is not built yet",
  "80": "a boundary given as an encoded word whose parts use the decoded value: the walker matches the literal parameter only",
  "82": "a boundary partly an encoded word, the parts use the decoded value: the walker matches the literal parameter only",
  "83": "an unquoted boundary followed by junk (`boundary=b1 junk`): the walker keeps the whole value; Python cuts at the white space",
  "85": "`boundary=\"P1\"; boundary*=''P2` with parts on P1: the walker follows the RFC 2231 value (as Thunderbird), records a warning naming both; following both readings is not built yet",
  "97": "a file name as an encoded word in an unknown charset: kept as the encoded word; Python decodes it as ASCII",
  "98": "an empty boundary (`boundary=\"\"`): the walker takes it as no boundary; Python splits on `--`"
 }}
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import mime_facts  # noqa: E402

REPAIRED = "mime-repaired"
CTE_TOKEN = ("Python compares the whole Content-Transfer-Encoding value (white space, parameters and comments "
             "included) with 'base64' and leaves the body encoded; Thunderbird reads the first token of the field, "
             "so the client shows the decoded file, and so does the record")
MISMATCH = "attachment-name-mismatch"


def payload(name):
    """A small binary file, different for every case, so its SHA-256 finds
    exactly that case's mail."""
    head = ("%%PDF-1.4\n%% Kiroku MIME corpus case %s\n" % name).encode()
    return head + bytes(range(0, 256, 3)) + b"\n%%EOF\n"


def b64(data, width=76):
    s = base64.b64encode(data).decode()
    return "\r\n".join(s[i:i + width] for i in range(0, len(s), width))


def uu(data, name):
    lines = ["begin 644 %s" % name]
    for i in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[i:i + 45]).decode().rstrip("\n"))
    lines += ["`", "end"]
    return "\r\n".join(lines)


def top(ctype, extra="", to="Bob <bob@example.org>", subject=None, mime=True):
    h = "From: Alice <alice@example.com>\r\nTo: %s\r\n" % to
    h += "Subject: %s\r\n" % (subject or "case")
    h += "Date: Mon, 2 Dec 2024 10:00:00 +0000\r\nMessage-ID: <case@example.com>\r\n"
    if mime:
        h += "MIME-Version: 1.0\r\n"
    return h + extra + (("Content-Type: %s\r\n" % ctype) if ctype else "") + "\r\n"


def text_part(boundary="b1", text="Please see the attached file."):
    return "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n" % (boundary, text)


def att_part(headers, body, boundary="b1"):
    return "--%s\r\n%s\r\n\r\n%s\r\n" % (boundary, "\r\n".join(headers), body)


def std_att(data, name="report.pdf", boundary="b1", ctype="application/pdf"):
    return att_part([
        "Content-Type: %s" % ctype,
        'Content-Disposition: attachment; filename="%s"' % name,
        "Content-Transfer-Encoding: base64",
    ], b64(data), boundary)


def mixed(parts, boundary="b1", ctype=None, extra="", **kw):
    ctype = ctype or 'multipart/mixed; boundary="%s"' % boundary
    return (top(ctype, extra, **kw) + "This is a multi-part message in MIME format.\r\n"
            + "".join(parts) + "--%s--\r\n" % boundary)


def att(name, data, candidates=None, te=None):
    a = {"filename": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    if candidates is not None:
        a["name_candidates"] = candidates
    if te:
        a["transfer_encoding"] = te
    return a


class Cases:
    def __init__(self):
        self.cases = []

    def add(self, file, what, raw, expect=None, **kw):
        """expect: None means Python's reading is the expectation."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        c = {"file": file, "what": what, "raw": raw}
        if expect is not None:
            c["attachments"] = expect
        c.update(kw)
        self.cases.append(c)

    def write(self, sub):
        d = os.path.join(HERE, sub)
        os.makedirs(d, exist_ok=True)
        for old in os.listdir(d):
            if old.endswith(".eml"):
                os.remove(os.path.join(d, old))
        out = []
        for c in self.cases:
            raw = c.pop("raw")
            path = os.path.join(d, c["file"])
            with open(path, "wb") as f:
                f.write(raw)
            py = mime_facts.facts(path)
            pyatt = py.get("attachments") or []
            c["python"] = {
                "filenames": [a["filename"] for a in pyatt],
                "sha256": [a["sha256"] for a in pyatt],
            }
            if "attachments" not in c:
                c["attachments"] = [
                    {k: a[k] for k in ("filename", "sha256", "size")} for a in pyatt
                ]
            elif "python_differs" not in c:
                want = [(a["filename"] if isinstance(a["filename"], str) else None, a["sha256"])
                        for a in c["attachments"]]
                got = list(zip(c["python"]["filenames"], c["python"]["sha256"]))
                if want != got:
                    sys.exit("%s/%s: expectation %s differs from Python %s without a reason"
                             % (sub, c["file"], want, got))
            if c["file"][:2] in OPEN.get(sub, {}):
                c["open"] = OPEN[sub][c["file"][:2]]
            out.append(c)
        with open(os.path.join(d, "expect.json"), "w") as f:
            json.dump({"cases": out}, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print("%s: %d messages" % (sub, len(out)))


def defects():
    c = Cases()

    d = payload("stray-base64")
    enc = b64(d).split("\r\n")
    enc[0] = enc[0][:10] + "!" + enc[0][10:20] + "*" + enc[0][20:]
    enc[1] = enc[1][:30] + "\x7f" + enc[1][30:]
    c.add("stray-base64-char.eml", "stray characters inside base64 lines",
          mixed([text_part(), att_part(["Content-Type: application/pdf",
                                        'Content-Disposition: attachment; filename="stray.pdf"',
                                        "Content-Transfer-Encoding: base64"], "\r\n".join(enc))]),
          [att("stray.pdf", d, ["stray.pdf"], "base64")], tags=[REPAIRED])

    d = payload("missing-padding") + b"x"
    assert len(d) % 3 != 0
    c.add("missing-base64-padding.eml", "base64 without its closing = padding",
          mixed([text_part(), att_part(["Content-Type: application/pdf",
                                        'Content-Disposition: attachment; filename="nopad.pdf"',
                                        "Content-Transfer-Encoding: base64"], b64(d).rstrip("="))]),
          [att("nopad.pdf", d, ["nopad.pdf"], "base64")], tags=[REPAIRED])

    d = payload("rfc2231-empty-charset")
    c.add("rfc2231-empty-charset.eml", "filename*=''x.zip: RFC 2231 with an empty charset",
          mixed([text_part(), att_part(["Content-Type: application/zip",
                                        "Content-Disposition: attachment; filename*=''x.zip",
                                        "Content-Transfer-Encoding: base64"], b64(d))]),
          [att("x.zip", d, ["x.zip"])], absent_tags=[MISMATCH])

    d = payload("rfc2231-empty-charset-continuations")
    c.add("rfc2231-empty-charset-continuations.eml",
          "RFC 2231 continuations, the first with an empty charset",
          mixed([text_part(), att_part(["Content-Type: application/zip",
                                        "Content-Disposition: attachment;\r\n filename*0*=''quarterly%20;\r\n filename*1*=report.zip",
                                        "Content-Transfer-Encoding: base64"], b64(d))]),
          [att("quarterly report.zip", d, ["quarterly report.zip"])], absent_tags=[MISMATCH])

    d = payload("rfc2231-decoy")
    c.add("rfc2231-decoy-name.eml",
          "filename*=UTF-8''q3-forecast.zip; filename=\"holiday.png\": a decoy plain name",
          mixed([text_part(), att_part(["Content-Type: application/zip",
                                        "Content-Disposition: attachment; filename*=UTF-8''q3-forecast.zip; filename=\"holiday.png\"",
                                        "Content-Transfer-Encoding: base64"], b64(d))]),
          [att("q3-forecast.zip", d, ["q3-forecast.zip", "holiday.png"])], tags=[MISMATCH])

    d = payload("boundary-rfc2231")
    c.add("boundary-rfc2231.eml", "boundary*=''XX: the boundary as an RFC 2231 parameter",
          mixed([text_part("XX"), std_att(d, "budget.xlsx", "XX", "application/vnd.ms-excel")],
                "XX", "multipart/mixed; boundary*=''XX"),
          [att("budget.xlsx", d, ["budget.xlsx"])])

    d = payload("boundary-comment")
    c.add("boundary-comment.eml", "a comment after the boundary parameter",
          mixed([text_part("XX"), std_att(d, "plan.docx", "XX")],
                "XX", 'multipart/mixed; boundary="XX" (generated by mailer)'),
          [att("plan.docx", d, ["plan.docx"])])

    d = payload("boundary-comment-before")
    c.add("boundary-comment-before.eml", "a comment before the boundary's value",
          mixed([text_part("XX"), std_att(d, "plan2.docx", "XX")],
                "XX", "multipart/mixed; boundary=(mailer)XX"),
          [att("plan2.docx", d, ["plan2.docx"])])

    d = payload("bad-header-line")
    c.add("bad-header-line-in-part.eml",
          "a line that is not a header inside one part's header block; the mail's own headers are fine",
          mixed([text_part(), att_part(["Content-Type: application/pdf",
                                        "This line is not a header",
                                        'Content-Disposition: attachment; filename="contract.pdf"',
                                        "Content-Transfer-Encoding: base64"], b64(d))],
                subject="Signed contract"),
          [att("contract.pdf", d, ["contract.pdf"], "base64")], tags=[REPAIRED],
          subject="Signed contract", to=["bob@example.org"],
          python_differs="Python ends the part's header block at the bad line (MissingHeaderBodySeparatorDefect), "
          "so the disposition and the transfer encoding become body text; mail clients skip the bad line, and the "
          "issue asks that it affect nothing else")

    d = payload("uuencode-in-text")
    c.add("uuencode-in-text-body.eml", "a uuencoded file (begin 644 name) inside a plain text body",
          top("text/plain; charset=us-ascii") + "Here is the file.\r\n\r\n" + uu(d, "notes.zip") + "\r\n",
          [att("notes.zip", d, ["notes.zip"], "uuencode")],
          python_differs="Python's email package does not look for uuencoded blocks inside a text body; "
          "Outlook, Thunderbird and other clients show the block as the attachment notes.zip")

    d = payload("x-uuencode-part")
    c.add("x-uuencode-part.eml", "a MIME part with Content-Transfer-Encoding: x-uuencode",
          mixed([text_part(), att_part(["Content-Type: application/octet-stream; name=\"data.bin\"",
                                        'Content-Disposition: attachment; filename="data.bin"',
                                        "Content-Transfer-Encoding: x-uuencode"], uu(d, "data.bin"))]),
          [att("data.bin", d, ["data.bin"], "uuencode")])

    d = payload("to-empty-element")
    c.add("to-leading-empty-element.eml", "To: , carol@example.com (an empty first element)",
          mixed([text_part(), std_att(d, "minutes.pdf")], to=", carol@example.com"),
          [att("minutes.pdf", d, ["minutes.pdf"])], to=["carol@example.com"])

    d = payload("to-comments")
    c.add("to-empty-elements-and-comments.eml", "address list with comments and empty elements",
          mixed([text_part(), std_att(d, "agenda.pdf")],
                to="(team) carol@example.com, , dave@example.com (Dave),"),
          [att("agenda.pdf", d, ["agenda.pdf"])], to=["carol@example.com", "dave@example.com"])

    d = payload("encoded-word-8bit")
    raw = mixed([text_part(), att_part(["Content-Type: application/pdf",
                                        "Content-Disposition: attachment; filename=\"=?UTF-8?Q?r\u00e9sum\u00e9.pdf?=\"",
                                        "Content-Transfer-Encoding: base64"], b64(d))],
                subject="=?UTF-8?Q?Q3_r\u00e9sum\u00e9?=")
    c.add("encoded-word-8bit.eml", "raw 8-bit (UTF-8) bytes inside RFC 2047 encoded words",
          raw.encode("utf-8"), [att("résumé.pdf", d, ["résumé.pdf"])], subject="Q3 résumé")
    c.write("defects")


def evasion():
    c = Cases()
    n = [0]

    def name(slug):
        n[0] += 1
        return "%02d-%s.eml" % (n[0], slug)

    def case(slug, what, raw, expect=None, **kw):
        c.add(name(slug), what, raw, expect, **kw)

    P = payload

    # --- Boundaries ------------------------------------------------------
    d = P("boundary-prefix")
    case("boundary-prefix-of-inner", "the outer boundary is a prefix of the inner one",
         mixed([text_part("ab"),
                "--ab\r\nContent-Type: multipart/mixed; boundary=\"abcd\"\r\n\r\n"
                + std_att(d, "inner.pdf", "abcd") + "--abcd--\r\n"], "ab"))
    d = P("boundary-trailing-ws")
    raw = mixed([text_part("b1"), std_att(d, "ws.pdf")]).replace("--b1\r\nContent-Type: application/pdf",
                                                               "--b1   \t\r\nContent-Type: application/pdf")
    case("delimiter-trailing-space", "a delimiter line with trailing white space (transport padding)", raw)
    d = P("boundary-suffix")
    case("delimiter-with-suffix", "a line that starts with the delimiter but goes on is not a delimiter",
         mixed([text_part("b1", "--b1x not a boundary\r\nmore text"), std_att(d, "real.pdf")]))
    d = P("two-boundary-params")
    case("two-boundary-params", "two boundary parameters; the parts use the first",
         mixed([text_part("B"), std_att(d, "first.pdf", "B")], "B",
               'multipart/mixed; boundary="B"; boundary="C"'))
    d = P("two-boundary-params-second")
    case("two-boundary-params-second-used", "two boundary parameters; the parts use the second",
         mixed([text_part("C"), std_att(d, "second.pdf", "C")], "C",
               'multipart/mixed; boundary="B"; boundary="C"'),
         [att("second.pdf", d)],
         python_differs="Python uses the first of two boundary parameters and finds no parts; mailparse (the "
         "agent's parser before issue 17) used the last. Readers disagree, so the record must show the file "
         "either reading finds: a delimiter of any of the declared boundaries delimits")
    d = P("boundary-case")
    case("boundary-case-differs", "the delimiter differs in case from the declared boundary",
         mixed([text_part("abc"), std_att(d, "case.pdf", "abc")], "abc",
               'multipart/mixed; boundary="ABC"'))
    d = P("no-close-delimiter")
    raw = top('multipart/mixed; boundary="b1"') + text_part() + std_att(d, "noclose.pdf")
    case("no-close-delimiter", "no closing delimiter: the last part runs to the end", raw)
    d, e = P("epilogue-visible"), P("epilogue-hidden")
    case("part-in-epilogue", "a complete part after the closing delimiter (epilogue)",
         mixed([text_part(), std_att(d, "shown.pdf")]) + std_att(e, "hidden.exe") + "--b1--\r\n")
    d, e = P("preamble-visible"), P("preamble-hidden")
    raw = mixed([text_part(), std_att(d, "shown2.pdf")]).replace(
        "This is a multi-part message in MIME format.\r\n",
        "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"pre.exe\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + b64(e) + "\r\n")
    case("part-in-preamble", "a fake part with headers in the preamble", raw)
    d = P("same-boundary-nested")
    case("nested-same-boundary", "a nested multipart reusing the outer boundary",
         mixed([text_part(), "--b1\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
                + std_att(d, "samebnd.pdf") + "--b1--\r\n"]))
    d = P("deep-nesting")
    inner = std_att(d, "deep.pdf", "L5") + "--L5--\r\n"
    for lvl in range(4, 0, -1):
        inner = ("--L%d\r\nContent-Type: multipart/mixed; boundary=\"L%d\"\r\n\r\n" % (lvl, lvl + 1)
                 + inner + "--L%d--\r\n" % lvl)
        inner = inner if lvl > 1 else inner
    case("nested-five-deep", "an attachment five multiparts deep",
         top('multipart/mixed; boundary="L1"') + text_part("L1") + inner.split("--L1--\r\n")[0]
         + "--L1--\r\n")
    d = P("alternative-attachment")
    case("attachment-in-alternative", "an attachment inside multipart/alternative",
         mixed([text_part("alt"), "--alt\r\nContent-Type: text/html\r\n\r\n<p>see</p>\r\n",
                std_att(d, "alt.pdf", "alt")], "alt", 'multipart/alternative; boundary="alt"'))
    d = P("long-boundary")
    bnd = "x" * 90
    case("boundary-over-70-chars", "a boundary longer than RFC 2046's 70 characters",
         mixed([text_part(bnd), std_att(d, "long.pdf", bnd)], bnd))
    d = P("boundary-spaces")
    case("boundary-with-spaces", "a quoted boundary containing spaces",
         mixed([text_part("a b c"), std_att(d, "spaces.pdf", "a b c")], "a b c"))
    d = P("boundary-single-quotes")
    case("boundary-single-quoted", "boundary='b1' (single quotes are not quotes in MIME)",
         mixed([text_part(), std_att(d, "sq.pdf")], ctype="multipart/mixed; boundary='b1'"))
    d = P("boundary-in-text")
    case("boundary-inside-text-part", "the delimiter appears inside a text part, splitting it",
         mixed([text_part("b1", "Hello\r\n--b1\r\nContent-Type: application/pdf\r\n"
                          "Content-Disposition: attachment; filename=\"injected.pdf\"\r\n"
                          "Content-Transfer-Encoding: base64\r\n\r\n" + b64(d))]))
    d = P("multipart-no-boundary")
    case("multipart-without-boundary", "multipart/mixed without a boundary parameter",
         mixed([text_part(), std_att(d, "nobnd.pdf")], ctype="multipart/mixed"))
    d = P("boundary-unquoted-special")
    case("boundary-unquoted-with-equals", "an unquoted boundary containing '=' and '/'",
         mixed([text_part("=_x/y"), std_att(d, "eq.pdf", "=_x/y")], "=_x/y",
               "multipart/mixed; boundary==_x/y"),
         [att("eq.pdf", d)],
         python_differs="Python's parameter parser stops an unquoted value at '=' (a tspecial) and finds no "
         "boundary, so it shows no attachment; mail clients take the value up to ';' and show eq.pdf. Recording "
         "the file a client shows is the safe side")

    # --- Duplicate and conflicting headers -------------------------------
    d = P("two-content-types")
    case("two-content-type-in-part", "a part with two Content-Type headers (application/pdf, then text/plain)",
         mixed([text_part(), att_part(["Content-Type: application/pdf; name=\"two.pdf\"",
                                       "Content-Type: text/plain",
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("two-cte")
    case("two-cte-in-part", "two Content-Transfer-Encoding headers (base64, then 7bit)",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition: attachment; filename="twocte.pdf"',
                                       "Content-Transfer-Encoding: base64",
                                       "Content-Transfer-Encoding: 7bit"], b64(d))]))
    d = P("two-cte-reversed")
    case("two-cte-in-part-reversed", "two Content-Transfer-Encoding headers (7bit, then base64)",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition: attachment; filename="twocte2.pdf"',
                                       "Content-Transfer-Encoding: 7bit",
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("two-dispositions")
    case("two-content-dispositions", "two Content-Disposition headers naming different files",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition: attachment; filename="invoice.pdf"',
                                       'Content-Disposition: attachment; filename="invoice.exe"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]),
         [dict(att("invoice.pdf", d), name_candidates=["invoice.pdf", "invoice.exe"])], tags=[MISMATCH])
    d = P("two-filenames")
    case("two-filename-params", "filename given twice in one Content-Disposition",
         mixed([text_part(), att_part(["Content-Type: application/octet-stream",
                                       'Content-Disposition: attachment; filename="a.txt"; filename="b.exe"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]),
         [dict(att(["a.txt", "b.exe"], d), name_candidates=["a.txt", "b.exe"])], tags=[MISMATCH],
         python_differs="Python shows the first filename, other parsers the last; either display name is "
         "accepted as long as both are recorded and the mail is tagged")
    d = P("name-vs-filename")
    case("name-differs-from-filename", "Content-Type name and Content-Disposition filename differ",
         mixed([text_part(), att_part(['Content-Type: application/pdf; name="statement.pdf"',
                                       'Content-Disposition: attachment; filename="payload.exe"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]),
         [dict(att("payload.exe", d), name_candidates=["payload.exe", "statement.pdf"])], tags=[MISMATCH])
    d = P("top-two-content-types")
    case("top-level-two-content-types", "the mail has two Content-Type headers, multipart first",
         mixed([text_part(), std_att(d, "toptwo.pdf")],
               extra='Content-Type: multipart/mixed; boundary="b1"\r\n', ctype="text/plain"))
    d = P("top-two-content-types-rev")
    case("top-level-two-content-types-text-first", "the mail has two Content-Type headers, text/plain first",
         mixed([text_part(), std_att(d, "toptwo2.pdf")], extra="Content-Type: text/plain\r\n"))
    d = P("no-space-after-colon")
    case("headers-without-spaces", "headers with no space after the colon or around parameters",
         mixed([text_part(), att_part(["Content-Type:application/pdf",
                                       'Content-Disposition:attachment;filename="nospace.pdf"',
                                       "Content-Transfer-Encoding:base64"], b64(d))],
               ctype='multipart/mixed;boundary="b1"'))
    d = P("upper-case-headers")
    case("upper-case-names-and-values", "header names, types and encodings in upper case",
         mixed([text_part(), att_part(["CONTENT-TYPE: APPLICATION/PDF",
                                       'CONTENT-DISPOSITION: ATTACHMENT; FILENAME="UPPER.PDF"',
                                       "CONTENT-TRANSFER-ENCODING: BASE64"], b64(d))],
               ctype='MULTIPART/MIXED; BOUNDARY="b1"'))
    d = P("space-before-colon")
    case("space-before-colon-in-part", "a part header with white space before the colon",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition : attachment; filename="wsp.pdf"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]),
         [att("wsp.pdf", d)], tags=[REPAIRED],
         python_differs="Python ends the header block at the malformed line and reads the rest as body; "
         "RFC 5322's obsolete syntax allows white space before the colon and clients accept it")
    d = P("folded-content-type")
    case("folded-content-type", "a Content-Type folded over three lines, boundary on the last",
         mixed([text_part(), std_att(d, "folded.pdf")],
               ctype='multipart/mixed;\r\n\tcharset="us-ascii";\r\n boundary="b1"'))
    d = P("comment-in-type")
    case("comment-in-content-type", "comments inside the Content-Type and Content-Disposition values",
         mixed([text_part(), att_part(["Content-Type: application/pdf (a comment)",
                                       'Content-Disposition: attachment (x); filename="cmt.pdf"',
                                       "Content-Transfer-Encoding: base64 (y)"], b64(d))],
               ctype='multipart/mixed (outer); boundary="b1"'),
         [att("cmt.pdf", d)], python_differs=CTE_TOKEN)
    d = P("no-mime-version")
    case("no-mime-version", "a multipart mail without MIME-Version",
         mixed([text_part(), std_att(d, "nomv.pdf")], mime=False))
    d = P("part-no-blank-line")
    case("part-headers-no-blank-line", "a part whose header block is not followed by an empty line",
         mixed([text_part(), "--b1\r\nContent-Type: application/pdf\r\n"
                "Content-Disposition: attachment; filename=\"noblank.pdf\"\r\n--b1\r\n"
                + std_att(d, "afterblank.pdf")[len("--b1\r\n"):]]))

    # --- Transfer encodings ----------------------------------------------
    for slug, cte, what, decoded in [
        ("cte-mixed-case", "Base64", "Content-Transfer-Encoding in mixed case", None),
        ("cte-padded", "  base64  ", "Content-Transfer-Encoding with surrounding white space", True),
        ("cte-with-param", "base64; x=y", "Content-Transfer-Encoding with a parameter", True),
        ("cte-quoted", '"base64"', "Content-Transfer-Encoding quoted", None),
        ("cte-unknown", "bas64", "a misspelt Content-Transfer-Encoding", None),
        ("cte-x-token", "x-base64", "an x- Content-Transfer-Encoding", None),
    ]:
        d = P(slug)
        expect = dict(expect=[att(slug + ".pdf", d)], python_differs=CTE_TOKEN) if decoded else {}
        case(slug, what, mixed([text_part(), att_part(["Content-Type: application/pdf",
                                                      'Content-Disposition: attachment; filename="%s.pdf"' % slug,
                                                      "Content-Transfer-Encoding: %s" % cte], b64(d))]),
             **expect)
    d = P("b64-spaces")
    body = " ".join(b64(d, 8).split("\r\n"))
    case("base64-with-spaces", "base64 with spaces between groups", mixed([text_part(), att_part(
        ["Content-Type: application/pdf", 'Content-Disposition: attachment; filename="spaced.pdf"',
         "Content-Transfer-Encoding: base64"], body)]))
    d = P("b64-one-line")
    case("base64-one-long-line", "base64 on one 400-character line (no line wrapping)", mixed([text_part(), att_part(
        ["Content-Type: application/pdf", 'Content-Disposition: attachment; filename="oneline.pdf"',
         "Content-Transfer-Encoding: base64"], b64(d, 10000))]))
    d1, d2 = P("b64-concat-1"), P("b64-concat-2")
    case("base64-concatenated", "two base64 streams, each padded, one after the other", mixed([text_part(), att_part(
        ["Content-Type: application/pdf", 'Content-Disposition: attachment; filename="concat.pdf"',
         "Content-Transfer-Encoding: base64"], b64(d1 + b"x") + "\r\n" + b64(d2))]),
         [att("concat.pdf", d1 + b"x" + d2)],
         python_differs="Python stops decoding at the first padding, so the second stream (a whole second file) "
         "is silently dropped; decoding every 4-character group in turn, as the agent always has, keeps both "
         "streams' bytes, and a sender cannot hide data behind a '='")
    d = P("b64-url-safe")
    case("base64-url-safe-alphabet", "base64 in the URL-safe alphabet (- and _)", mixed([text_part(), att_part(
        ["Content-Type: application/pdf", 'Content-Disposition: attachment; filename="urlsafe.pdf"',
         "Content-Transfer-Encoding: base64"], base64.urlsafe_b64encode(d + b"\xfb\xff").decode())]))
    d = P("b64-garbage-after-pad")
    case("base64-text-after-padding", "text after the padded end of the base64 data", mixed([text_part(), att_part(
        ["Content-Type: application/pdf", 'Content-Disposition: attachment; filename="trail.pdf"',
         "Content-Transfer-Encoding: base64"], b64(d + b"y") + "\r\n-- \r\nsent from my phone")]))
    d = P("qp-binary")
    qp = "".join("=%02X" % b for b in d)
    qp = "=\r\n".join(qp[i:i + 72] for i in range(0, len(qp), 72))
    case("quoted-printable-attachment", "a binary attachment in quoted-printable", mixed([text_part(), att_part(
        ["Content-Type: application/pdf", 'Content-Disposition: attachment; filename="qp.pdf"',
         "Content-Transfer-Encoding: quoted-printable"], qp)]))
    d = P("qp-lower-hex")
    qp = "".join("=%02x" % b for b in d)
    qp = "=\r\n".join(qp[i:i + 72] for i in range(0, len(qp), 72))
    case("quoted-printable-lower-case-hex", "quoted-printable with lower-case hex digits", mixed([text_part(), att_part(
        ["Content-Type: application/pdf", 'Content-Disposition: attachment; filename="qplow.pdf"',
         "Content-Transfer-Encoding: quoted-printable"], qp)]))
    d = P("cte-on-multipart")
    inner = ("Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n" + std_att(d, "inmp.pdf", "in") + "--in--\r\n")
    case("base64-encoded-multipart", "a multipart part whose body is base64 (forbidden by RFC 2045)",
         mixed([text_part(), "--b1\r\nContent-Type: multipart/mixed; boundary=\"in\"\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n" + b64(inner.encode()) + "\r\n"]))
    d = P("uu-name-differs")
    case("x-uuencode-name-differs", "an x-uuencode part whose begin line names another file",
         mixed([text_part(), att_part(['Content-Type: application/octet-stream',
                                       'Content-Disposition: attachment; filename="photo.jpg"',
                                       "Content-Transfer-Encoding: x-uuencode"], uu(d, "payload.exe"))]),
         [dict(att("photo.jpg", d), name_candidates=["photo.jpg", "payload.exe"])], tags=[MISMATCH])
    d = P("8bit-binary")
    raw = mixed([text_part(), att_part(["Content-Type: application/octet-stream",
                                        'Content-Disposition: attachment; filename="raw.bin"',
                                        "Content-Transfer-Encoding: 8bit"], "@@RAW@@")]).encode()
    # SMTP forbids NUL and bare CR or LF even in 8-bit data (the agent
    # refuses them): the raw bytes are the file with those left out.
    raw = raw.replace(b"@@RAW@@", d.replace(b"\x00", b"").replace(b"\n", b"\r\n"))
    case("8bit-binary-attachment", "an attachment sent as raw 8-bit bytes", raw)

    # --- Parameters ------------------------------------------------------
    for slug, disp, what in [
        ("quoted-semicolon", 'attachment; filename="a;b.pdf"', "a quoted file name containing ';'"),
        ("escaped-quote", 'attachment; filename="say \\"hi\\".pdf"', "a file name with escaped quotes"),
        ("param-upper", 'attachment; FILENAME="upper-param.pdf"', "the parameter name in upper case"),
        ("param-spaces", 'attachment; filename = "eqspace.pdf"', "white space around '='"),
        ("missing-semicolon", 'attachment filename="nosemi.pdf"', "no ';' between disposition and parameter"),
        ("leading-semicolon", ';attachment; filename="lead.pdf"', "a ';' before the disposition type"),
        ("windows-path", 'attachment; filename="C:\\\\Temp\\\\path.pdf"', "a file name with a Windows path"),
        ("unix-path", 'attachment; filename="../../etc/dots.pdf"', "a file name with ../ components"),
        ("long-name", 'attachment; filename="%s.pdf"' % ("n" * 300), "a 300-character file name"),
        ("rfc2047-in-quotes", 'attachment; filename="=?UTF-8?B?5pel5pys6KqeLnBkZg==?="',
         "an RFC 2047 encoded word inside a quoted parameter"),
        ("rfc2231-language", "attachment; filename*=utf-8'en'r%C3%A9sum%C3%A9-en.pdf", "RFC 2231 with a language"),
        ("rfc2231-unknown-charset", "attachment; filename*=x-unknown''unknown-cs.pdf", "RFC 2231 with an unknown charset"),
        ("rfc2231-out-of-order", "attachment; filename*1=\"order.pdf\"; filename*0=\"out-of-\"",
         "RFC 2231 continuations given out of order"),
        ("rfc2231-gap", "attachment; filename*0=\"gap-\"; filename*2=\"x.pdf\"", "RFC 2231 continuations with a gap"),
        ("rfc2231-mixed", "attachment; filename*0*=UTF-8''mix%20; filename*1=\"ed.pdf\"",
         "RFC 2231 continuations, encoded and plain"),
        ("rfc2231-pct-nul", "attachment; filename*=UTF-8''nul%00byte.pdf", "an RFC 2231 name with a NUL octet"),
        ("rfc2231-bad-pct", "attachment; filename*=UTF-8''bad%zzpct.pdf", "an RFC 2231 name with a bad % escape"),
    ]:
        d = P(slug)
        case("param-" + slug, what, mixed([text_part(), att_part(
            ["Content-Type: application/pdf", "Content-Disposition: " + disp,
             "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("decoy-reversed")
    case("rfc2231-decoy-plain-first", "plain filename first, then an RFC 2231 filename* with another name",
         mixed([text_part(), att_part(["Content-Type: application/zip",
                                       "Content-Disposition: attachment; filename=\"holiday2.png\"; filename*=UTF-8''q4-forecast.zip",
                                       "Content-Transfer-Encoding: base64"], b64(d))]),
         [dict(att(["q4-forecast.zip", "holiday2.png"], d), name_candidates=["q4-forecast.zip", "holiday2.png"])],
         tags=[MISMATCH],
         python_differs="Python takes whichever filename parameter comes first (holiday2.png here, the RFC 2231 "
         "one when it comes first); clients that implement RFC 2231 prefer filename*. Either display name is "
         "accepted, as long as both names are recorded and the mail is tagged")
    d = P("unquoted-spaces")
    case("param-unquoted-spaces", "an unquoted file name with a space",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       "Content-Disposition: attachment; filename=my report.pdf",
                                       "Content-Transfer-Encoding: base64"], b64(d))]),
         [att(["my report.pdf", "my"], d)],
         python_differs="Python stops the unquoted value at the space ('my'); mail clients show the whole "
         "value ('my report.pdf'); either is accepted")
    d = P("name-only")
    case("content-type-name-only", "named only by the Content-Type name parameter, no disposition",
         mixed([text_part(), att_part(['Content-Type: application/pdf; name="nameonly.pdf"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("inline-named")
    case("inline-with-filename", "an inline part with a file name",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition: inline; filename="inline.pdf"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("unnamed-attachment")
    case("attachment-without-name", "Content-Disposition: attachment without any name",
         mixed([text_part(), att_part(["Content-Type: application/octet-stream",
                                       "Content-Disposition: attachment",
                                       "Content-Transfer-Encoding: base64"], b64(d))]),
         note="a file without a name is recorded as part-<path><ext> (part-2.bin; Thunderbird shows 'Part 1.2'), "
         "not with an empty name (review finding 11 of issue 17)")
    d = P("text-part-exe")
    case("text-plain-named-exe", "a text/plain part named as an executable",
         mixed([text_part(), att_part(["Content-Type: text/plain",
                                       'Content-Disposition: attachment; filename="run.exe"'],
                                      "MZ this is not really a program")]))
    case("empty-attachment", "an attachment of zero bytes",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition: attachment; filename="empty.pdf"',
                                       "Content-Transfer-Encoding: base64"], "")]))
    d = P("rfc822-attached")
    inner = mixed([text_part("i1"), std_att(d, "nested.pdf", "i1")], "i1").replace(
        "Message-ID: <case@example.com>", "Message-ID: <inner@example.com>")
    case("attached-message", "an attached message/rfc822 carrying its own attachment",
         mixed([text_part(), "--b1\r\nContent-Type: message/rfc822\r\n"
                "Content-Disposition: attachment; filename=\"fwd.eml\"\r\n\r\n" + inner]),
         [att("fwd.eml", inner.encode()[:-2])],
         python_differs="Python does not decode an attached message (no bytes, no hash); the file is the "
         "attached message as it stands in the part (its own attachment is opened on the collector)")
    d = P("signed")
    case("attachment-in-multipart-signed", "an attachment inside multipart/signed",
         mixed(["--s1\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" + text_part()
                + std_att(d, "signed.pdf") + "--b1--\r\n",
                "--s1\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQE=\r\n"],
               "s1", 'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="s1"'))
    d = P("related")
    case("attachment-in-related", "an attachment inside multipart/related with a Content-ID",
         mixed([text_part("r1"), att_part(["Content-Type: image/png; name=\"logo.png\"", "Content-ID: <logo>",
                                          "Content-Transfer-Encoding: base64"], b64(d), "r1")],
               "r1", 'multipart/related; boundary="r1"'))
    case("part-without-headers", "a part with no headers at all (text/plain by default)",
         mixed([text_part(), "--b1\r\n\r\nJust text, no headers.\r\n"]),
         note="every leaf but the body's first text/plain and text/html part is a file, so this second text "
         "part is part-2.txt (Python's iter_attachments lists it too; review finding 11 of issue 17)")
    d = P("double-dash-boundary")
    case("boundary-starting-with-dashes", "a boundary that itself starts with two dashes",
         mixed([text_part("--x"), std_att(d, "dashes.pdf", "--x")], "--x"))
    # --- Parameter forms MIME-tools flags as ambiguous (its
    # ambiguous_content(), and CPANSA-MIME-tools-2026-116266: an encoded
    # word inside a boundary) ---------------------------------------------
    ENCODED_BOUNDARY = ("Python decodes an encoded word in the boundary parameter and finds no parts; encoded "
                        "words are not allowed in parameters (RFC 2047 5), Thunderbird splits on the literal "
                        "value and shows the file (the evasion behind CPANSA-MIME-tools-2026-116266)")
    RFC2231_BOUNDARY = ("boundary and boundary* disagree: Python uses the first, a reader that prefers the RFC 2231 "
                        "form (as RFC 2231 intends and Thunderbird does for names) the other; each shows a "
                        "different message, so the record must show the file either reading finds (multi-view "
                        "extraction, draft-chen-email-mime-ambiguity-defense)")
    for slug, param, used, what, differs in [
        ("boundary-encoded-word", 'boundary="=?us-ascii?Q?enc?="', "=?us-ascii?Q?enc?=",
         "an RFC 2047 encoded word as the boundary; the parts use it literally", ENCODED_BOUNDARY),
        ("boundary-encoded-word-decoded", 'boundary="=?us-ascii?Q?enc?="', "enc",
         "an RFC 2047 encoded word as the boundary; the parts use its decoded form", None),
        ("boundary-partly-encoded-literal", 'boundary="abc=?us-ascii?Q?def?="', "abc=?us-ascii?Q?def?=",
         "a boundary partly an encoded word; the parts use it literally", None),
        ("boundary-partly-encoded-decoded", 'boundary="abc=?us-ascii?Q?def?="', "abcdef",
         "a boundary partly an encoded word; the parts use its decoded form",
         "Python and Thunderbird take the value literally and find no parts; MIME-tools (and Claws Mail) decode "
         "encoded words in the boundary, so their users see the file: the record shows it"),
        ("boundary-unquoted-then-junk", "boundary=b1 junk", "b1",
         "an unquoted boundary followed by white space and junk", None),
        ("boundary-comment-before-equals", 'boundary(c)="b1"', "b1",
         "a comment between the parameter name and '='", None),
        ("boundary-plain-and-rfc2231-first", "boundary=\"P1\"; boundary*=''P2", "P1",
         "boundary and boundary* with different values; the parts use the plain one", None),
        ("boundary-plain-and-rfc2231-second", "boundary=\"P1\"; boundary*=''P2", "P2",
         "boundary and boundary* with different values; the parts use the RFC 2231 one", RFC2231_BOUNDARY),
    ]:
        d = P(slug)
        expect = dict(expect=[att(slug + ".pdf", d)], python_differs=differs) if differs else {}
        case(slug, what, mixed([text_part(used), std_att(d, slug + ".pdf", used)], used,
                               "multipart/mixed; " + param), **expect)
    d = P("filename-comment-before-equals")
    case("filename-comment-before-equals", "a comment between filename and '='",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition: attachment; filename(c)="fcomment.pdf"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("part-first-header-continuation")
    case("part-first-header-is-continuation", "a part whose first header line starts with white space",
         mixed([text_part(), att_part([" X-Folded: nothing to fold onto", "Content-Type: application/pdf",
                                       'Content-Disposition: attachment; filename="cont.pdf"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("quoted-printable-named-soft-breaks")
    case("filename-folded-in-quotes", "a quoted file name folded over two lines",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition: attachment; filename="quarterly\r\n report.pdf"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    # --- More header-block and delimiter forms --------------------------
    d = P("whitespace-separator")
    case("whitespace-only-separator-line", "a line of one space between a part's headers and its body",
         mixed([text_part(), "--b1\r\nContent-Type: application/pdf\r\n"
                "Content-Disposition: attachment; filename=\"wsline.pdf\"\r\n"
                "Content-Transfer-Encoding: base64\r\n \r\n" + b64(d) + "\r\n"]),
         [att("wsline.pdf", d)],
         python_differs="Python takes the line of white space for a continuation of the Content-Transfer-Encoding "
         "field ('base64 ' then matches no encoding) and records the base64 text as the file; the line holds no "
         "field, and ending the header block there gives the file the sender attached")
    d = P("type-without-subtype")
    case("content-type-without-subtype", "Content-Type: application (no subtype) with a name",
         mixed([text_part(), att_part(['Content-Type: application; name="nosub.pdf"',
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("no-preamble")
    raw = mixed([text_part(), std_att(d, "nopre.pdf")]).replace(
        "This is a multi-part message in MIME format.\r\n", "")
    case("no-preamble", "the first delimiter right after the header block", raw)
    d = P("delimiter-garbage")
    case("delimiter-followed-by-text", "a delimiter line followed by text is not a delimiter",
         mixed([text_part("b1", "before"), std_att(d, "garbage.pdf").replace("--b1\r\n", "--b1 trailing words\r\n"),
                std_att(P("after-garbage"), "after.pdf")]))
    d = P("close-extra-dashes")
    case("close-delimiter-extra-dashes", "a closing delimiter with extra dashes, then a hidden part",
         top('multipart/mixed; boundary="b1"') + text_part() + std_att(d, "dashes2.pdf") + "--b1----\r\n"
         + std_att(P("after-close"), "afterclose.exe") + "--b1--\r\n")
    d = P("latin1-text-attachment")
    case("latin1-text-attachment", "a Latin-1 text attachment in quoted-printable (the file is its bytes)",
         mixed([text_part(), att_part(["Content-Type: text/plain; charset=iso-8859-1; name=\"notes.txt\"",
                                       'Content-Disposition: attachment; filename="notes.txt"',
                                       "Content-Transfer-Encoding: quoted-printable"],
                                      "caf=E9 cr=E8me br=FBl=E9e=\r\n soft break\r\nline two ")]),
         [att("notes.txt", b"caf\xe9 cr\xe8me br\xfbl\xe9e soft break\r\nline two")],
         python_differs="RFC 2045 6.7 (3): trailing white space on a quoted-printable line was added in transport "
         "and is deleted when decoding (an encoder writes a meant one as =20); Python keeps it")
    d = P("split-encoded-words")
    case("filename-two-encoded-words", "a file name in two RFC 2047 encoded words",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition: attachment; filename="=?UTF-8?B?5pel5pys?= =?UTF-8?B?6KqeLnBkZg==?="',
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("encoded-word-unknown-charset")
    case("filename-encoded-word-unknown-charset", "an encoded-word file name in an unknown charset",
         mixed([text_part(), att_part(["Content-Type: application/pdf",
                                       'Content-Disposition: attachment; filename="=?x-unknown?Q?ukw.pdf?="',
                                       "Content-Transfer-Encoding: base64"], b64(d))]))
    d = P("empty-boundary")
    case("empty-boundary", 'boundary="" (empty) with parts delimited by "--"',
         mixed([text_part(""), std_att(d, "emptybnd.pdf", "")], "", 'multipart/mixed; boundary=""'))
    d = P("digest")
    inner = top("text/plain").replace("Message-ID: <case@example.com>", "Message-ID: <d1@example.com>") + "digest text\r\n"
    case("multipart-digest", "a multipart/digest whose parts default to message/rfc822",
         mixed(["--dg\r\n\r\n" + inner, std_att(d, "digest.pdf", "dg")], "dg", 'multipart/digest; boundary="dg"'),
         [att("part-1.eml", inner.encode()[:-2]), att("digest.pdf", d)],
         python_differs="the digest's unnamed message/rfc822 part is a file too (an attached message, as "
         "Thunderbird shows it; named part-1.eml); Python does not decode an attached message (no bytes, no hash)")
    case("begin-line-in-prose", "prose that mentions 'begin 644 notes.txt' is not a uuencoded file",
         top("text/plain; charset=us-ascii") + "To send a file the old way, write\r\n"
         "begin 644 notes.txt\r\nand then the encoded lines; nothing follows here.\r\n")
    c.write("evasion")


if __name__ == "__main__":
    defects()
    evasion()
