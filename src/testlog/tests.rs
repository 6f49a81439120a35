use super::*;

const LOG: &str = r#"running 3 suites
npm test finished
<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4" failures="1">
  <testsuite name="checkout" tests="4" failures="1" errors="1" skipped="1">
<testcase name="adds to cart" classname="cart" time="0.2"/>
<testcase name="pays" classname="checkout" file="tests/pay.spec.ts" line="42" time="1.5">
  <failure message="expected 200, got 500">stack...</failure>
</testcase>
<testcase name="refunds" classname="checkout"><error>connection refused</error></testcase>
<testcase name="later" classname="checkout"><skipped/></testcase>
  </testsuite>
</testsuites>
done, exit 1"#;

#[test]
fn a_junit_report_in_the_log_is_counted_and_its_failures_kept() {
    let log = TestLog::parse(LOG);
    let junit = log.junit.expect("a report");
    assert_eq!(
        (junit.tests, junit.failures, junit.errors, junit.skipped),
        (4, 1, 1, 1)
    );
    assert_eq!(junit.counts(), "4 cases: 1 passed, 2 failed, 1 skipped");
    assert_eq!(junit.failed.len(), 2);
    let pays = &junit.failed[0];
    assert_eq!(pays.name, "pays");
    assert_eq!(pays.file.as_deref(), Some("tests/pay.spec.ts"));
    assert_eq!(pays.line, Some(42));
    assert_eq!(pays.message, "expected 200, got 500");
    assert_eq!(junit.failed[1].message, "connection refused");
}

#[test]
fn the_tail_is_the_end_of_the_log_and_bounded() {
    let log = TestLog::parse(LOG);
    assert!(log.tail.ends_with("done, exit 1"));
    assert_eq!(log.tail.lines().count(), TAIL_LINES);
    let long = "x".repeat(100_000);
    let log = TestLog::parse(&long);
    assert_eq!(log.tail.len(), TAIL_BYTES);
    assert_eq!(log.excerpt.len(), EXCERPT_BYTES);
    assert_eq!(log.junit, None);
    // Cut on a character: a three-byte one does not fit whole at the start.
    let wide = TestLog::parse(&"€".repeat(10_000));
    assert!(wide.tail.len() <= TAIL_BYTES && wide.tail.len() > TAIL_BYTES - 3);
    assert!(wide.tail.chars().all(|c| c == '€'));
}

#[test]
fn a_hostile_report_stays_within_the_caps() {
    // Names of 100 KB (cut inside a two-byte character), a 10 MB message, 100k cases.
    let huge = "é".repeat(50_000);
    let mut xml = format!(
        "<testsuite name=\"s\"><testcase name=\"{huge}\" classname=\"{huge}\" \
         file=\"{huge}\" line=\"7\"><failure message=\"{}\"/></testcase>",
        "m".repeat(10 << 20)
    );
    for n in 0..100_000 {
        xml.push_str(&format!(
            "<testcase name=\"case {n}\"><failure message=\"boom {n}\"/></testcase>"
        ));
    }
    xml.push_str("</testsuite>");
    let log = TestLog::parse(&xml);
    assert!(
        log.kept_bytes() <= MAX_KEPT_BYTES,
        "{} bytes kept, at most {MAX_KEPT_BYTES}",
        log.kept_bytes()
    );
    assert!(log.tail.len() <= TAIL_BYTES && log.excerpt.len() <= EXCERPT_BYTES);
    let junit = log.junit.expect("a report");
    assert_eq!((junit.tests, junit.failures), (100_001, 100_001), "exact");
    assert_eq!(junit.failed.len(), MAX_FAILED_CASES);
    let first = &junit.failed[0];
    for (field, cap) in [
        (first.name.as_str(), NAME_BYTES),
        (first.classname.as_deref().unwrap_or_default(), NAME_BYTES),
        (first.file.as_deref().unwrap_or_default(), FILE_BYTES),
        (first.message.as_str(), MESSAGE_BYTES),
    ] {
        assert!(
            field.len() <= cap && field.len() > cap - 16,
            "{}",
            field.len()
        );
        let kept = field.strip_suffix(CUT).expect("marked as cut");
        assert!(kept.starts_with("é") || kept.starts_with('m'), "{kept}");
    }
    assert_eq!(first.line, Some(7));
    assert_eq!(junit.failed[1].name, "case 0", "later cases are kept whole");
}

#[test]
fn long_failures_are_kept_until_the_budget_is_spent() {
    // 200 failures whose messages are just under their cap: only the first few are kept.
    let message = "x".repeat(MESSAGE_BYTES - 1);
    let cases: String = (0..200)
        .map(|n| format!("<testcase name=\"c{n}\"><failure message=\"{message}\"/></testcase>"))
        .collect();
    let log = TestLog::parse(&format!("<testsuite name=\"s\">{cases}</testsuite>"));
    assert!(log.kept_bytes() <= MAX_KEPT_BYTES, "{}", log.kept_bytes());
    let junit = log.junit.expect("a report");
    assert_eq!(junit.failures, 200);
    assert!(
        (10..20).contains(&junit.failed.len()),
        "{} kept",
        junit.failed.len()
    );
    assert!(junit.failed.iter().all(|c| c.message == message), "not cut");
    assert_eq!(
        junit.failed.last().map(|c| c.name.as_str()),
        Some(&*format!("c{}", junit.failed.len() - 1))
    );
}

#[test]
fn clipping_cuts_on_a_character_and_says_so() {
    assert_eq!(clip("short", 10), "short");
    assert_eq!(clip("exactly 10", 10), "exactly 10");
    let cut = clip(&"ü".repeat(20), 16);
    assert!(cut.len() <= 16, "{cut}");
    assert_eq!(cut, format!("{}{CUT}", "ü".repeat(3)));
}

#[test]
fn a_succeeded_test_keeps_only_its_counts() {
    let log = TestLog::parse(LOG).counts_only();
    assert_eq!(log.tail, "");
    assert_eq!(log.excerpt, "");
    let junit = log.junit.expect("a report");
    assert_eq!(junit.counts(), "4 cases: 1 passed, 2 failed, 1 skipped");
    assert!(junit.failed.is_empty());
}

#[test]
fn a_log_without_a_report_has_none_and_a_cut_one_says_so() {
    let cut = TestLog::parse("<testsuite name=\"x\"><testcase").junit;
    assert_eq!(cut.map(|j| (j.tests, j.complete)), Some((0, false)));
    assert_eq!(TestLog::parse("no xml here").junit, None);
}

fn fixture(path: &str) -> String {
    let path = format!("{}/tests/fixtures/junit/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn reports_of_real_test_runners_are_counted_whole() {
    // (file, tests, failures, errors, skipped): what each runner's report says.
    let reports = [
        ("jest/jest-junit.xml", (6, 4, 0, 1)),
        ("jest/jest-suite-failed.xml", (2, 0, 2, 0)),
        ("pytest/pytest.xml", (10, 2, 0, 2)),
        ("phpunit/phpunit-paths.xml", (6, 6, 0, 0)),
        ("phpunit/phpunit-suite-file.xml", (12, 2, 0, 0)),
        ("surefire/surefire-kotlin.xml", (2, 2, 0, 0)),
        ("nextest/nextest.xml", (3, 1, 0, 0)),
        ("go/go-junit-report.xml", (5, 2, 0, 1)),
        ("playwright/playwright-report.xml", (60, 4, 0, 20)),
        ("mocha/mocha.xml", (1, 0, 0, 0)),
    ];
    for (file, counts) in reports {
        let log = format!("$ run the tests\n{}\nexit 1\n", fixture(file));
        let junit = TestLog::parse(&log).junit.expect("a report");
        assert_eq!(
            (junit.tests, junit.failures, junit.errors, junit.skipped),
            counts,
            "{file}"
        );
        assert!(junit.complete, "{file}");
        assert_eq!(junit.failed.len() as u64, counts.1 + counts.2, "{file}");
    }
}

#[test]
fn failure_text_keeps_its_entities_and_lines() {
    let jest = TestLog::parse(&fixture("jest/jest-junit.xml"))
        .junit
        .expect("a report");
    let message = &jest.failed[0].message;
    assert!(
        message.contains("Received: false\n    at Object.test (")
            && message.contains("at new Promise (<anonymous>)\n"),
        "{message}"
    );
    let failed = TestLog::parse(&fixture("jest/jest-suite-failed.xml"))
        .junit
        .expect("a report");
    assert!(
        failed.failed[0]
            .message
            .contains("13   \"typeRoots\": [\"./src/lib/types\", \"./node_modules/@types\"],"),
        "{}",
        failed.failed[0].message
    );
    let nextest = TestLog::parse(&fixture("nextest/nextest.xml"))
        .junit
        .expect("a report");
    assert!(
        nextest.failed[0]
            .message
            .starts_with("thread 'test_failure' panicked at tests/parry3d.rs:154:5:")
    );
}

#[test]
fn a_report_cut_by_the_log_read_says_it_is_incomplete() {
    // The end of the log of a long Jest run: the report's start is gone.
    let whole = fixture("jest/jest-junit.xml");
    let from = whole
        .find("  <testsuite name=\"undefined\"")
        .expect("a second suite");
    let log = format!("{}\nTests: 4 failed\n", &whole[from..]);
    let junit = TestLog::parse(&log).junit.expect("what was read");
    assert!(!junit.complete);
    assert!(
        junit.counts().starts_with("report cut: "),
        "{}",
        junit.counts()
    );
    // Its end cut (the byte limit of the read): as far as it was read.
    let junit = TestLog::parse(&whole[..whole.len() / 2])
        .junit
        .expect("what was read");
    assert!(!junit.complete);
    // A failed test whose report shows no failure is never all passed.
    let passing = "<testsuite name=\"s\"><testcase name=\"ok\"/></testsuite>";
    let junit = TestLog::parse(passing).junit.expect("a report");
    assert!(junit.complete);
    assert_eq!(
        junit.summary(false),
        "1 cases: 1 passed, 0 failed, 0 skipped"
    );
    assert!(
        !junit.summary(true).contains("0 failed"),
        "{}",
        junit.summary(true)
    );
}

#[test]
fn a_marked_report_is_read_whole_and_names_its_workspace() {
    let report = fixture("phpunit/phpunit-paths.xml");
    let log = format!(
        "noise\n--- preview-operator junit begin root=/home/runner/work/repo ---\n{report}\n\
         --- preview-operator junit end ---\nexit 1\n"
    );
    let junit = TestLog::parse(&log).junit.expect("a report");
    assert!(junit.complete);
    assert_eq!(
        junit.failed[0].location,
        Some(("src/Fake.php".to_string(), 42))
    );
    // The end marker without its begin: the whole log is wanted.
    let tail = &log[log.find("<testcase").expect("a case")..];
    assert!(marked::begins_before(tail));
    assert!(!TestLog::parse(tail).junit.expect("read").complete);
    let mut scanner = marked::Scanner::default();
    for chunk in log.as_bytes().chunks(7) {
        scanner.feed(chunk);
    }
    let marked = scanner.finish().expect("marked");
    assert!(marked.ended);
    assert_eq!(marked.root.as_deref(), Some("/home/runner/work/repo"));
    let junit = TestLog::parse_with(tail, Some(marked))
        .junit
        .expect("a report");
    assert!(junit.complete && junit.failures == 6);
}

#[test]
fn cases_are_located_in_the_repository_only() {
    let located = |file: &str| {
        TestLog::parse(&fixture(file))
            .junit
            .expect("a report")
            .failed
            .into_iter()
            .map(|c| c.location)
            .collect::<Vec<_>>()
    };
    // Jest: no file, Windows paths in the text, no workspace known: nowhere.
    assert!(located("jest/jest-junit.xml").iter().all(Option::is_none));
    // nextest: the panic's file:line.
    assert_eq!(
        located("nextest/nextest.xml")[0],
        Some(("tests/parry3d.rs".to_string(), 154))
    );
    // Playwright: the file:line its failure text starts with.
    assert_eq!(
        located("playwright/playwright-report.xml")[0],
        Some(("tests/grid.spec.ts".to_string(), 202))
    );
    // PHPUnit's absolute paths, without a workspace: nowhere.
    assert!(
        located("phpunit/phpunit-suite-file.xml")
            .iter()
            .all(Option::is_none)
    );
    assert_eq!(
        paths::repository_path(
            "/home/matteo/OSS/phpunit/tests/a.phpt",
            Some("/home/matteo/OSS/phpunit/")
        ),
        Some("tests/a.phpt".to_string())
    );
    for not_a_file in [
        "Test 1 › Test 1.1",
        "../x.rs",
        "/abs/x.rs",
        "a/node_modules/b.js",
        "",
    ] {
        assert_eq!(
            paths::repository_path(not_a_file, None),
            None,
            "{not_a_file}"
        );
    }
}
