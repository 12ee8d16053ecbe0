"""What Python's own `email` package (policy=email.policy.default) reads in
raw messages, as JSON, for the end-to-end tests to compare with the
agent's records: an independent MIME parser as the oracle.

usage: email_facts.py FILE...
prints: [{"file", "subject", "from", "to", "cc", "body_plain",
          "attachments": [{"filename", "content_type", "inline", "size",
                           "sha256"}], "defects"}, ...]

A field Python cannot read at all is null. Leaves are found as the agent
finds them: only multipart/* parts have subparts (an attached
message/rfc822 is one leaf). Which leaves are files is the agent's rule
(`files`), applied to Python's reading: a leaf is a file when its
disposition is "attachment" or unknown (RFC 2183), it has a file name
(Content-Disposition filename or Content-Type name), it is uuencoded, or
it is any other leaf than the body's first text/plain and first text/html
part (an unnamed zip, an inline PDF, a second text part); multipart leaves
(no boundary) are not. A file without a name is called what the agent
calls it, "part-<IMAP path><extension of its type>" (part-1.2.zip), like
Thunderbird's "Part 1.2"; Python's get_filename() is None for it.
"""
import email
import email.policy
import hashlib
import json
import sys


def addresses(msg, name):
    try:
        out = []
        for h in msg.get_all(name) or []:
            out.extend(a.addr_spec for a in h.addresses)
        return out
    except Exception:
        return None


def leaves(part, path=""):
    """Every leaf with its IMAP-style path ("1", "2.1")."""
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for i, sub in enumerate(part.get_payload(), 1):
            yield from leaves(sub, "%s.%d" % (path, i) if path else str(i))
    else:
        yield path or "1", part


# The extensions of the agent's made-up names (common/src/mime/walk.rs
# generated_name): the same table, so names compare.
EXTENSIONS = {
    "application/zip": ".zip", "application/x-zip-compressed": ".zip",
    "application/pdf": ".pdf", "application/x-7z-compressed": ".7z",
    "application/gzip": ".gz", "application/x-gzip": ".gz",
    "application/x-tar": ".tar", "application/x-rar-compressed": ".rar",
    "application/vnd.rar": ".rar", "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat", "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls", "application/vnd.ms-powerpoint": ".ppt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/octet-stream": ".bin", "application/pkcs7-mime": ".p7m",
    "application/x-pkcs7-mime": ".p7m", "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s", "application/pgp-encrypted": ".asc",
    "application/pgp-signature": ".asc", "message/rfc822": ".eml",
    "text/plain": ".txt", "text/html": ".html", "text/calendar": ".ics",
    "text/csv": ".csv", "image/png": ".png", "image/jpeg": ".jpg",
    "image/gif": ".gif",
}

UUENCODE = ("x-uuencode", "uuencode", "x-uue", "uue")


def files(msg):
    """(path, part, display name or None, is_file) for every leaf."""
    taken = set()
    for path, part in leaves(msg):
        disp = part.get_content_disposition()
        ctype = part.get_content_type()
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        is_file = (
            (disp is not None and disp != "inline")
            or has_param(part, "filename", "content-disposition")
            or has_param(part, "name", "content-type")
            or cte in UUENCODE
        )
        if not is_file and not ctype.startswith("multipart/"):
            if ctype in ("text/plain", "text/html") and ctype not in taken:
                taken.add(ctype)
            else:
                is_file = True
        name = part.get_filename()
        if is_file and not name:
            name = "part-%s%s" % (path, EXTENSIONS.get(ctype, ""))
        yield path, part, name, is_file


def has_param(part, name, header):
    return part.get_param(name, None, header) is not None


def facts(path):
    with open(path, "rb") as f:
        raw = f.read()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    try:
        subject = str(msg["subject"]) if msg["subject"] is not None else ""
    except Exception:
        subject = None
    out = {
        "file": path,
        "subject": subject,
        "from": addresses(msg, "from"),
        "to": addresses(msg, "to"),
        "cc": addresses(msg, "cc"),
        "body_plain": None,
        "attachments": [],
        "defects": [],
    }
    for part in msg.walk():
        out["defects"].extend(type(d).__name__ for d in part.defects)
    for _, part, name, attachment in files(msg):
        disp = part.get_content_disposition()
        if not attachment:
            if part.get_content_type() == "text/plain" and out["body_plain"] is None:
                try:
                    out["body_plain"] = part.get_content()
                except Exception:
                    pass
            continue
        data = None if part.is_multipart() else part.get_payload(decode=True)
        out["attachments"].append({
            "filename": name,
            "content_type": part.get_content_type(),
            "inline": disp == "inline",
            "size": None if data is None else len(data),
            "sha256": None if data is None else hashlib.sha256(data).hexdigest(),
        })
    return out


def main():
    print(json.dumps([facts(p) for p in sys.argv[1:]]))


if __name__ == "__main__":
    main()
