"""Builds Japanese test mail with Python's `email` package (a MIME
implementation we did not write) in the charsets Japanese mailers use,
and the substring queries an investigator would type, each with the mail
it must find.

Every charset is used twice (and Python's own codec names appear as
labels once each): once with base64 bodies and headers and an
RFC 2231 attachment name (`filename*=charset'ja'%XX`), once with
quoted-printable and the attachment name as an RFC 2047 encoded-word in
quotes (what Outlook and many Japanese mailers write).

The expected hits are computed here, independently of the collector's
analyzer: a query finds a mail when its NFKC, lower-cased form is a
substring of the NFKC, lower-cased field (Python's unicodedata). The
generated queries are windows of 1, 2, 3 and 6 kana/kanji/hangul of each
field, for which substring containment is exactly what a search must do.

usage: japanese_mail.py OUTDIR
writes OUTDIR/<name>.eml (CRLF line endings)
prints {"mails": [{"name", "file", "message_id", "charset", "subject",
        "body", "attachment"}], "queries": [{"field", "query", "expect"}]}
"""
import json
import os
import sys
import unicodedata
from email import charset as cs
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.message import EmailMessage
from email.mime.text import MIMEText
from email.policy import SMTP, compat32

# (name, charset, transfer encoding, subject, body, attachment name)
MAILS = [
    ("iso2022jp-b64", "iso-2022-jp", "base64",
     "第3四半期の売上報告と来期予算について（至急）",
     "お疲れ様です。第3四半期の売上報告をお送りします。ご確認ください。",
     "売上報告書_2026年度.pdf"),
    ("iso2022jp-qp", "iso-2022-jp", "qp",
     "見積書送付のお願い",
     "株式会社山田商事 御中\n見積書を添付いたします。",
     "見積書_山田商事.xlsx"),
    ("shiftjis-b64", "shift_jis", "base64",
     "会議室予約の変更について",
     "明日の会議は第二会議室に変更となりました。",
     "会議資料.docx"),
    # Half-width katakana: Shift_JIS holds them, ISO-2022-JP does not.
    ("shiftjis-qp", "shift_jis", "qp",
     "ｶﾀｶﾅのﾃｽﾄ件名",
     "ﾃﾞｰﾀﾍﾞｰｽの移行作業は完了しました。",
     "ﾃﾞｰﾀ一覧.csv"),
    # ㈱ and ① exist in CP932 (Windows), not in plain Shift_JIS.
    ("cp932-b64", "cp932", "base64",
     "㈱サンプル①契約更新のご案内",
     "契約書の原本を郵送いたしました。ご査収ください。",
     "契約書①.pdf"),
    ("cp932-qp", "cp932", "qp",
     "人事異動の内示について",
     "来月一日付で営業部へ異動となります。",
     "辞令.pdf"),
    ("eucjp-b64", "euc-jp", "base64",
     "システム障害報告",
     "本日午前にネットワーク障害が発生しました。",
     "障害報告書.txt"),
    ("eucjp-qp", "euc-jp", "qp",
     "新製品発表会のご招待",
     "新製品の発表会を東京本社で開催いたします。",
     "招待状.pdf"),
    # A subject of 60 kana/kanji without a space.
    ("utf8-b64", "utf-8", "base64",
     "第3四半期の売上報告と来期予算についての至急のお願いと見積書の送付および"
     "会議日程の調整に関するご連絡です皆様よろしく以上",
     "한국어 본문도 검색됩니다. 長い件名の確認です。",
     "長い件名のテスト.txt"),
    ("utf8-qp", "utf-8", "qp",
     "Q3売上reportの確認",
     "ＦＵＬＬ－ＷＩＤＴＨ ＡＳＣＩＩ and Mixed Case Text",
     "Q3売上report.xlsx"),
    # Python's own codec names as labels, as a script naming its charset
    # that way writes them.
    ("py-iso2022jp", "iso2022_jp", "base64",
     "稟議書の承認依頼",
     "稟議書をご確認の上、承認をお願いします。",
     "稟議書.pdf"),
    ("py-eucjis2004", "euc_jis_2004", "qp",
     "出張報告書の提出",
     "大阪出張の報告書を提出します。",
     "出張報告.docx"),
    # The modern API (EmailMessage, policy SMTP): a long subject folded
    # into several encoded-words, a long file name in RFC 2231
    # continuations (filename*0*=utf-8''...; filename*1*=...).
    ("utf8-modern", "iso-2022-jp", "modern",
     "新年度の人材育成研修プログラムに関するアンケート調査へのご協力のお願いと回答期限のお知らせ",
     "研修の参加者は回答してください。",
     "人材育成研修プログラム実施報告書と来年度計画案および参加者アンケート集計結果.xlsx"),
    # 売上 and 報告 both present, never adjacent: 売上報告 must not find it.
    ("utf8-apart", "utf-8", "base64",
     "売上の件と報告会のご案内",
     "売上は好調です。報告は来週します。",
     "memo.txt"),
]


def fold(s):
    return unicodedata.normalize("NFKC", s).lower()


def is_cjk(c):
    name = unicodedata.name(c, "")
    return name.startswith(("CJK UNIFIED", "HIRAGANA", "KATAKANA", "HANGUL")) or c in "々ー"


def windows(text, n):
    """The first run of n kana/kanji/hangul that starts at or after a third
    of the (folded) text, else the first anywhere."""
    t = fold(text)
    starts = [i for i in range(len(t) - n + 1) if all(is_cjk(c) for c in t[i:i + n])]
    if not starts:
        return None
    later = [i for i in starts if i >= len(t) // 3]
    i = (later or starts)[0]
    return t[i:i + n]


def charset(name, cte):
    c = cs.Charset(name)
    enc = cs.BASE64 if cte == "base64" else cs.QP
    c.header_encoding = enc
    c.body_encoding = enc
    # Python writes its own codec names (e.g. `shift_jis`, `cp932`); keep
    # the label mailers use.
    c.output_charset = name
    c.input_codec = name
    c.output_codec = name
    return c


def build_modern(name, charset_name, subject, body, attachment):
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "sender@example.jp"
    msg["To"] = "rcpt@example.co.jp"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<jp-{name}@kiroku.test>"
    msg["Date"] = "Mon, 07 Dec 2026 09:30:00 +0900"
    msg.set_content(body, charset=charset_name)
    msg.add_attachment(b"PK test attachment", maintype="application",
                       subtype="octet-stream", filename=attachment)
    return msg.as_bytes()


def build(name, charset_name, cte, subject, body, attachment):
    if cte == "modern":
        return build_modern(name, charset_name, subject, body, attachment)
    c = charset(charset_name, cte)
    msg = MIMEMultipart()
    msg["From"] = "sender@example.jp"
    msg["To"] = "rcpt@example.co.jp"
    msg["Subject"] = Header(subject, c)
    msg["Message-ID"] = f"<jp-{name}@kiroku.test>"
    msg["Date"] = "Mon, 07 Dec 2026 09:30:00 +0900"
    msg.attach(MIMEText(body, "plain", c))
    part = MIMEApplication(b"%PDF-1.4 test attachment " + name.encode(), "octet-stream")
    if cte == "base64":
        part.add_header("Content-Disposition", "attachment",
                        filename=(charset_name, "ja", attachment))
    else:
        word = Header(attachment, c).encode()
        part.add_header("Content-Disposition", f'attachment; filename="{word}"')
    msg.attach(part)
    return msg.as_bytes(policy=compat32.clone(linesep="\r\n"))


def main():
    out = sys.argv[1]
    mails = []
    for name, charset_name, cte, subject, body, attachment in MAILS:
        raw = build(name, charset_name, cte, subject, body, attachment)
        path = os.path.join(out, name + ".eml")
        with open(path, "wb") as f:
            f.write(raw)
        mails.append({"name": name, "file": path, "message_id": f"<jp-{name}@kiroku.test>",
                      "charset": charset_name, "subject": subject, "body": body,
                      "attachment": attachment})
    fields = {"subject": ["subject"], "text": ["subject", "body"], "attachment": ["attachment"]}
    queries = []
    seen = set()
    for m in mails:
        for field, source in [("subject", "subject"), ("text", "body"), ("attachment", "attachment")]:
            for n in (1, 2, 3, 6):
                q = windows(m[source], n)
                if q is None or (field, q) in seen:
                    continue
                seen.add((field, q))
                expect = sorted(x["name"] for x in mails
                                if any(q in fold(x[f]) for f in fields[field]))
                queries.append({"field": field, "query": q, "expect": expect})
    print(json.dumps({"mails": mails, "queries": queries}, ensure_ascii=False))


if __name__ == "__main__":
    main()
