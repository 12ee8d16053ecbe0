"""Encodes texts with Python's codecs (strict: a character the charset
cannot hold is an error, not a silent '?'), for tests that build mail in
legacy charsets byte by byte.

usage: encode_text.py CODEC TEXT [CODEC TEXT ...]
prints: ["<hex of TEXT encoded with CODEC>", ...]
"""
import json
import sys


def main():
    args = sys.argv[1:]
    if len(args) % 2:
        sys.exit("usage: encode_text.py CODEC TEXT [CODEC TEXT ...]")
    print(json.dumps([args[i + 1].encode(args[i]).hex() for i in range(0, len(args), 2)]))


if __name__ == "__main__":
    main()
