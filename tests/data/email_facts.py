"""What Python's own `email` package (policy=email.policy.default) reads in
raw messages, as JSON, for the end-to-end tests to compare with the
agent's records: an independent MIME parser as the oracle.

usage: email_facts.py FILE...
prints: [{"file", "subject", "from", "to", "cc", "body_plain",
          "attachments": [{"filename", "content_type", "inline", "size",
                           "sha256"}], "defects"}, ...]

A field Python cannot read at all is null. Leaves are found as the agent
(mailparse) finds them: only multipart/* parts have subparts (an attached
message/rfc822 is one leaf), and a leaf is an attachment when its
disposition is "attachment" or it has a file name (Content-Disposition
filename or Content-Type name).
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


def leaves(part):
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for sub in part.get_payload():
            yield from leaves(sub)
    else:
        yield part


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
    for part in leaves(msg):
        disp = part.get_content_disposition()
        attachment = (
            disp == "attachment"
            or has_param(part, "filename", "content-disposition")
            or has_param(part, "name", "content-type")
        )
        if not attachment:
            if part.get_content_type() == "text/plain" and out["body_plain"] is None:
                try:
                    out["body_plain"] = part.get_content()
                except Exception:
                    pass
            continue
        data = None if part.is_multipart() else part.get_payload(decode=True)
        out["attachments"].append({
            "filename": part.get_filename(),
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
