"""JUnit parsing against real-world shaped reports (tests/testing/data) and hostile XML."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from circlet.testing.junit import (
    JUnitError,
    TestCase,
    case_id,
    derive_file,
    describe,
    format_failures,
    parse_bytes,
    parse_file,
    parse_path,
    summarize,
)

DATA = Path(__file__).parent / "data"
RESULTS = DATA / "results"


def test_pytest_legacy_report_keeps_files_results_and_messages() -> None:
    cases = parse_file(RESULTS / "pytest-legacy.xml")
    assert [(c.classname, c.name, c.file, c.result, c.time) for c in cases] == [
        ("tests.test_api.TestUsers", "test_list", "tests/test_api.py", "success", 1.25),
        ("tests.test_api.TestUsers", "test_create", "tests/test_api.py", "failure", 0.75),
        ("tests.test_models", "test_slug", "tests/test_models.py", "skipped", 0.012),
        ("tests.test_models", "test_save", "tests/test_models.py", "error", 1.0),
        ("tests.test_models", "test_str", "tests/test_models.py", "success", 0.5),
    ]
    failure = cases[1].message
    # The message attribute is already in the body: it is not repeated.
    assert failure.startswith("def test_create(client):\n>       assert")
    assert failure.count("AssertionError: assert 404 == 201") == 1
    assert "tests/test_api.py:22: AssertionError" in failure
    assert cases[2].message == "tests/test_models.py:5: needs postgres"
    assert cases[3].message == 'failed on setup with "RuntimeError: no db"\nRuntimeError: no db'


def test_pytest_xunit2_derives_the_file_from_the_module_classname() -> None:
    cases = parse_file(RESULTS / "nested" / "pytest-xunit2.xml")
    assert [(c.name, c.file, c.time) for c in cases] == [
        ("test_join[a-b]", "pkg/tests/test_util.py", 0.1),
        ("test_empty", "pkg/tests/test_util.py", 0.2),
    ]


def test_jest_junit_report() -> None:
    cases = parse_file(RESULTS / "nested" / "jest-junit.xml")
    assert [c.result for c in cases] == ["success", "failure", "skipped"]
    assert {c.file for c in cases} == {"src/__tests__/App.test.js"}
    assert cases[1].name == "App component shows an error"
    assert 'Expected: "Oops"' in cases[1].message
    assert "(src/__tests__/App.test.js:21:30)" in cases[1].message
    assert cases[1].time == pytest.approx(1.1)


def test_rspec_report_with_cdata_and_properties() -> None:
    cases = parse_file(RESULTS / "rspec.xml")
    assert [(c.file, c.result) for c in cases] == [
        ("./spec/models/user_spec.rb", "success"),
        ("./spec/models/user_spec.rb", "failure"),
        ("./spec/lib/parser_spec.rb", "skipped"),
    ]
    assert cases[1].message.startswith("expected true, got false\nFailure/Error:")
    assert cases[2].time == pytest.approx(0.0003)


def test_surefire_report_with_namespaces_and_thousands_separators() -> None:
    cases = parse_file(RESULTS / "nested" / "TEST-com.example.CalculatorTest.xml")
    assert [(c.name, c.result, c.time) for c in cases] == [
        ("adds", "success", 1200.25),
        ("divides", "error", 34.25),
    ]
    assert cases[1].message == (
        "java.lang.ArithmeticException: / by zero\n"
        "\tat com.example.CalculatorTest.divides(CalculatorTest.java:14)"
    )
    assert cases[0].file == ""  # a Java classname says nothing certain without a root


def test_mocha_nested_suites_inherit_the_suite_file() -> None:
    cases = parse_file(RESULTS / "mocha.xml")
    assert [(c.name, c.file) for c in cases] == [
        ("cart totals sums items", "test/cart.spec.js"),
        ("cart totals applies discounts", "test/cart.spec.js"),
    ]


def test_gotestsum_report_uses_packages_as_classnames() -> None:
    cases = parse_file(RESULTS / "gotestsum.xml")
    assert [(c.classname, c.name, c.file) for c in cases] == [
        ("example.com/app/store", "TestPut", ""),
        ("example.com/app/store", "TestGet/missing", ""),
    ]


def test_a_results_folder_collects_every_junit_file_and_skips_other_xml() -> None:
    cases = parse_path(RESULTS)
    # 5 pytest + 3 rspec + 2 gotestsum + 2 mocha + 2 surefire + 3 jest + 2 xunit2;
    # coverage.xml (not JUnit) and notes.txt add nothing.
    assert len(cases) == 19
    assert {c.classname for c in cases} >= {"com.example.CalculatorTest", "spec.lib.parser_spec"}


def test_root_lets_a_java_classname_find_its_source(tmp_path: Path) -> None:
    source = tmp_path / "com" / "example" / "CalculatorTest.java"
    source.parent.mkdir(parents=True)
    source.write_text("class CalculatorTest {}")
    cases = parse_file(RESULTS / "nested" / "TEST-com.example.CalculatorTest.xml", root=tmp_path)
    assert {c.file for c in cases} == {"com/example/CalculatorTest.java"}
    assert derive_file("com.example.Missing", root=tmp_path) == ""
    assert derive_file("a.b.TestC", pytest=True) == "a/b.py"
    assert derive_file("", pytest=True) == ""


def test_malformed_xml_names_file_line_and_column() -> None:
    with pytest.raises(JUnitError) as info:
        parse_path(DATA / "bad" / "malformed.xml")
    message = str(info.value)
    assert message == f"{DATA / 'bad' / 'malformed.xml'}:4:3: malformed XML: mismatched tag"


def test_billion_laughs_is_refused_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(JUnitError, match=r"billion-laughs\.xml: refused: XML entity declarations"):
        parse_file(DATA / "bad" / "billion-laughs.xml")
    assert time.monotonic() - started < 5  # refused before any expansion


def test_external_entity_is_refused_and_nothing_is_read() -> None:
    with pytest.raises(JUnitError) as info:
        parse_file(DATA / "bad" / "external-entity.xml")
    assert "external-entity.xml: refused" in str(info.value)
    assert "root:" not in str(info.value)  # /etc/passwd never made it into anything


def test_a_folder_with_one_bad_file_fails_naming_that_file(tmp_path: Path) -> None:
    (tmp_path / "good.xml").write_bytes((RESULTS / "rspec.xml").read_bytes())
    (tmp_path / "zz-bad.xml").write_text("<testsuite><testcase")
    with pytest.raises(JUnitError, match=r"zz-bad\.xml:1:\d+: malformed XML"):
        parse_path(tmp_path)


def test_missing_path_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(JUnitError, match="no such file or folder"):
        parse_path(tmp_path / "nope")
    (tmp_path / "empty.xml").write_text("  \n")
    assert parse_path(tmp_path / "empty.xml") == []


def test_status_attribute_and_bare_testcase_root() -> None:
    cases = parse_bytes(
        b'<testcase classname="k" name="n" time="nan" status="skipped"/>', source="s.xml"
    )
    assert cases == [TestCase("k", "n", "", "skipped", 0.0, "")]


def test_to_dict_round_trip_and_bad_result_word() -> None:
    case = TestCase("k", "n", "f.py", "failure", 1.5, "boom")
    assert TestCase.from_dict(case.to_dict()) == case
    assert TestCase.from_dict({"name": "x", "result": "weird"}).result == "success"


def test_summary_and_failure_report() -> None:
    cases = parse_path(RESULTS)
    summary = summarize(cases, slowest=2)
    assert (summary.total, summary.passed, summary.failures, summary.errors, summary.skipped) == (
        19,
        11,
        3,
        2,
        3,
    )
    assert not summary.ok
    assert [c.name for c in summary.slowest] == ["adds", "divides"]
    assert describe(summary) == (
        f"19 tests, 11 passed, 3 failed, 2 errors, 3 skipped in {summary.time:.2f}s"
    )
    report = format_failures(cases, max_lines=2)
    assert report.count("FAILED ") == 3
    assert report.count("ERROR ") == 2
    assert "FAILED tests/test_api.py::tests.test_api.TestUsers::test_create (0.75s)" in report
    assert "more lines" in report
    assert case_id(TestCase("", "only", "", "success", 0)) == "only"
