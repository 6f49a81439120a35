//! `preview-operator test-report` on real JUnit reports (tests/fixtures/junit/): no cluster.

use std::process::Command;

fn report(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_preview-operator"))
        .arg("test-report")
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn fixture(path: &str) -> String {
    format!("{}/tests/fixtures/junit/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn json_has_the_counts_failed_cases_and_annotations_of_a_real_report() {
    let json: serde_json::Value =
        serde_json::from_str(&report(&[&fixture("playwright/playwright-report.xml")]))
            .expect("JSON");
    assert_eq!(json["complete"], true);
    assert_eq!(
        (
            &json["tests"],
            &json["passed"],
            &json["failures"],
            &json["skipped"]
        ),
        (&60.into(), &36.into(), &4.into(), &20.into())
    );
    assert_eq!(json["failed"].as_array().map(Vec::len), Some(4));
    let first = &json["annotations"][0];
    assert_eq!(first["path"], "tests/grid.spec.ts");
    assert_eq!(first["start_line"], 202);
}

#[test]
fn a_long_log_cut_by_the_read_is_incomplete_unless_its_report_is_marked() {
    let dir = std::env::temp_dir().join(format!("test-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let jest = std::fs::read_to_string(fixture("jest/jest-junit.xml")).expect("fixture");
    // A report of thousands of lines: the operator reads the last 5000 lines of a log.
    let padding: String = (0..6000)
        .map(|n| {
            format!(
                "    <testcase classname=\"pad\" name=\"ok {n}\" time=\"0\">\n    </testcase>\n"
            )
        })
        .collect();
    let long = jest.replacen(
        "  <testsuite name=\"undefined\"",
        &format!("{padding}  <testsuite name=\"undefined\""),
        1,
    );
    let plain = dir.join("plain.log");
    std::fs::write(&plain, format!("$ jest\n{long}\nexit 1\n")).expect("write");
    let json: serde_json::Value =
        serde_json::from_str(&report(&[plain.to_str().expect("path")])).expect("JSON");
    assert_eq!(json["complete"], false);
    let markdown = report(&["--format", "markdown", plain.to_str().expect("path")]);
    assert!(markdown.contains("report cut: "), "{markdown}");
    assert!(!markdown.contains("0 failed"), "{markdown}");
    let marked = dir.join("marked.log");
    std::fs::write(
        &marked,
        format!(
            "$ jest\n--- preview-operator junit begin ---\n{long}\n--- preview-operator junit end ---\nexit 1\n"
        ),
    )
    .expect("write");
    let json: serde_json::Value =
        serde_json::from_str(&report(&[marked.to_str().expect("path")])).expect("JSON");
    assert_eq!(json["complete"], true);
    assert_eq!(
        (&json["tests"], &json["failures"]),
        (&6006.into(), &4.into())
    );
    let message = json["failed"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("at new Promise (<anonymous>)\n"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
