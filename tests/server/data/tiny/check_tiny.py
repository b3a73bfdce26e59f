"""The tiny project's "test suite": checks the greeting, writes a JUnit report."""

import sys
import time
from pathlib import Path

report = Path(sys.argv[1])
report.parent.mkdir(parents=True, exist_ok=True)
started = time.time()
greeting = Path("out/greeting.txt").read_text()
ok = "from circlet" in greeting
elapsed = time.time() - started
failure = "" if ok else '<failure message="no greeting">greeting missing</failure>'
failed = 0 if ok else 1
lines = [
    '<?xml version="1.0" encoding="utf-8"?>',
    f'<testsuites><testsuite name="tiny" tests="3" failures="{failed}" skipped="1">',
    '<testcase classname="tiny.Greeting" name="test_greeting" file="check_tiny.py"'
    f' time="{elapsed:.3f}">{failure}</testcase>',
    '<testcase classname="tiny.Greeting" name="test_slow" file="check_tiny.py" time="0.250"/>',
    '<testcase classname="tiny.Greeting" name="test_skipped" file="check_tiny.py" time="0">'
    "<skipped/></testcase>",
    "</testsuite></testsuites>",
]
report.write_text("\n".join(lines) + "\n")
print(f"3 tests, {failed} failed")
sys.exit(failed)
