"""The attachments Python's own `email` package (policy=email.policy.default)
finds in raw messages, as JSON: the oracle of tests/tests/mime_recovery.rs
and of the agreement table (tests/data/mime_agreement.py).

usage: mime_facts.py FILE...
prints: [{"file", "count", "error",
          "attachments": [{"filename", "name_candidates", "content_type",
                           "inline", "size", "sha256"}]}, ...]

Attachments are found as in email_facts.py (`files`: the agent's rule of
which leaves are files, applied to Python's reading). `filename` is
get_filename(), or the agent's made-up "part-1.2.zip" for a file without
a name; `name_candidates` lists every
filename and name parameter as Python decodes it, duplicates included
once, in header order (Content-Disposition first). `count` is the number
of attachments. A message Python cannot read at all has "error" set and no
attachments, so one odd file does not stop the whole run.
"""
import email
import email.policy
import email.utils
import hashlib
import json
import sys

from email_facts import files


def candidates(part):
    out = []
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        try:
            params = part.get_params(header=header) or []
        except Exception:
            params = []
        for k, v in params:
            if k.lower() != param:
                continue
            value = email.utils.collapse_rfc2231_value(v)
            if value and value not in out:
                out.append(value)
    return out


def facts(path):
    with open(path, "rb") as f:
        raw = f.read()
    out = {"file": path, "count": 0, "error": None, "attachments": []}
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        for _, part, name, is_file in files(msg):
            disp = part.get_content_disposition()
            if not is_file:
                continue
            data = None if part.is_multipart() else part.get_payload(decode=True)
            out["attachments"].append({
                "filename": name or "",
                "name_candidates": candidates(part),
                "content_type": part.get_content_type(),
                "inline": disp == "inline",
                "size": None if data is None else len(data),
                "sha256": None if data is None else hashlib.sha256(data).hexdigest(),
            })
    except Exception as e:  # the oracle reports, the test decides
        out["error"] = "%s: %s" % (type(e).__name__, e)
        out["attachments"] = []
    out["count"] = len(out["attachments"])
    return out


def main():
    print(json.dumps([facts(p) for p in sys.argv[1:]]))


if __name__ == "__main__":
    main()
