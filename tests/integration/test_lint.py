"""
test_lint.py — the house's banned calls (STYLE.md, after git's banned.h): strcpy, strcat,
sprintf, vsprintf, strtok, atoi, atol, atoll, gets never appear as calls in src/, fuzz/ or
tests/unit/. Each has a bounded or checked replacement (snprintf, d11_buf, strtok_r,
strtol/strtoull with an end check, d11_parse_u64). A checked-in lint rather than a
poisoning header, so system headers stay untouched.
"""

import os
import re

from harness import REPO, timeout

BANNED = re.compile(r"(?<![A-Za-z0-9_])(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|atoll|gets)\s*\(")


def _sources():
    for top in ("src", "fuzz", os.path.join("tests", "unit")):
        for d, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if f.endswith((".c", ".h", ".def")):
                    yield os.path.join(d, f)


def _code(line):
    """The line without // comments and string literals (a banned name in text is fine)."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    return line.split("//", 1)[0]


@timeout(30)
def test_no_banned_calls():
    hits, n = [], 0
    for path in _sources():
        n += 1
        in_comment = False
        with open(path, encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f, 1):
                text = line
                if in_comment:
                    if "*/" not in text:
                        continue
                    text = text.split("*/", 1)[1]
                    in_comment = False
                text = re.sub(r"/\*.*?\*/", "", text)
                if "/*" in text:
                    text, in_comment = text.split("/*", 1)[0], True
                if BANNED.search(_code(text)):
                    hits.append("%s:%d: %s" % (os.path.relpath(path, REPO), i, line.strip()))
    assert n > 100, "found only %d source files under %s" % (n, REPO)
    assert not hits, "banned calls:\n  " + "\n  ".join(hits)
