"""The corpus agreement table of issue 17 as Markdown, from the output of
tests/tests/mime_recovery.rs (its `agreement |` and `expectation |` lines):
per corpus, the messages whose recorded attachment names and count equal
Python's `email` package's, and those that differ (in brackets: on purpose,
with the reason in the case's expectation or public/exceptions.json).

usage:
  cargo test --workspace --features kiroku-agent/test-hooks,kiroku-collector/test-hooks \\
      --test mime_recovery -- --nocapture > after.log 2>&1
  python3 tests/data/mime_agreement.py after.log [before.log]

With a second log (the same test run against an older agent, e.g. main's
binaries copied into target/debug) the table has before and after columns.
"""
import re
import sys

NAMES = {
    "defects": "defects (hand-built, one per defect)",
    "evasion": "evasion (hand-built)",
    "cpython": "CPython email test data",
    "enmime": "enmime",
    "mail-gem": "`mail` gem",
    "mail-parser": "mail-parser (Stalwart)",
    "mime4j": "Apache mime4j",
    "mimekit": "MimeKit",
}
LINE = re.compile(r"^(agreement|expectation) \| (\S+) \| (\d+) \| (\d+) \| (\d+) \|(?: (\d+) \|)?")


def read(path):
    rows = {"agreement": {}, "expectation": {}}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                rows[m[1]][m[2]] = [int(x or 0) for x in m.groups()[2:]]
    return rows


def cell(r):
    return "%d / %d" % (r[1], r[2]) + (" (%d)" % r[3] if r[2] and len(r) > 3 else "")


def main():
    after = read(sys.argv[1])
    before = read(sys.argv[2]) if len(sys.argv) > 2 else None
    head = "| corpus | messages | " + ("before: agree / differ | " if before else "")
    head += ("after: " if before else "") + "agree / differ (on purpose) |"
    print(head)
    print("|---" * (4 if before else 3) + "|")
    total_a, total_b = [0, 0, 0, 0], [0, 0, 0, 0]
    for key in list(NAMES) + sorted(set(after["agreement"]) - set(NAMES)):
        a = after["agreement"].get(key)
        if a is None:
            continue
        b = before["agreement"].get(key) if before else None
        total_a = [x + y for x, y in zip(total_a, a)]
        if b:
            total_b = [x + y for x, y in zip(total_b, b)]
        print("| %s | %d | %s%s |" % (NAMES.get(key, key), a[0], (cell(b[:3]) + " | ") if before else "",
                                     cell(a)))
    print("| **all** | **%d** | %s**%s** |" % (total_a[0], ("**%s** | " % cell(total_b[:3])) if before else "",
                                              cell(total_a)))
    for key, e in after["expectation"].items():
        was = before["expectation"].get(key) if before else None
        print("\n%s: %d of %d records as expected%s" % (key, e[1], e[0],
                                                         " (before: %d)" % was[1] if was else ""))


if __name__ == "__main__":
    main()
