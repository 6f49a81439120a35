//! Which file of the repository a failed case points at. An annotation on anything else (a
//! class name, a path on the CI machine) is refused or lost by GitHub, so only a path that is
//! relative to the repository is taken: the case's `file`, else its suite's, else the first
//! `file:line` in its failure text. Absolute paths count once the workspace they start with is
//! known (the `root=` of the report's begin marker).

use std::sync::LazyLock;

use regex::Regex;

use super::FILE_BYTES;

/// `path:line` as stack traces and runners print it (`at f (/src/a.test.js:10:21)`,
/// `tests/parry3d.rs:154:5`, `C:\work\a.php:28`): a path ending in an extension, then a line.
static FILE_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"((?:[A-Za-z]:)?[^\s:()\[\]"'<>|›,;]*[A-Za-z0-9_]\.[A-Za-z0-9]{1,10}):([0-9]{1,9})"#,
    )
    .ok()
});

/// `file:line` candidates looked at in one failure text: the first frames are the test's own.
const CANDIDATES: usize = 20;

/// `raw` as a path relative to the repository, if it is one.
pub fn repository_path(raw: &str, root: Option<&str>) -> Option<String> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("file://").unwrap_or(raw);
    if raw.is_empty() || raw.len() > FILE_BYTES {
        return None;
    }
    let path = raw.replace('\\', "/");
    let windows = path.as_bytes().get(1) == Some(&b':') && path.as_bytes().get(2) == Some(&b'/');
    let relative = if path.starts_with('/') || windows {
        let root = root?.trim().replace('\\', "/");
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            return None;
        }
        path.strip_prefix(root)?.strip_prefix('/')?.to_string()
    } else {
        path
    };
    let relative = relative.trim_start_matches("./");
    let real = !relative.is_empty()
        && !relative.ends_with('/')
        && relative
            .split('/')
            .all(|part| !part.is_empty() && part != ".." && part != "." && part != "node_modules")
        // A test file has an extension; a test's name ("Suite › case") is no file.
        && relative.rsplit('/').next().is_some_and(|name| name.contains('.'))
        && !relative.contains('›')
        && !relative.contains("://")
        // Node's own modules, in every JavaScript stack trace.
        && !relative.starts_with("internal/")
        && !relative.chars().any(char::is_control);
    real.then(|| relative.to_string())
}

/// The first `file:line` in `text` that is a file of the repository.
pub fn in_text(text: &str, root: Option<&str>) -> Option<(String, u64)> {
    let regex = FILE_LINE.as_ref()?;
    regex.captures_iter(text).take(CANDIDATES).find_map(|c| {
        let path = repository_path(c.get(1)?.as_str(), root)?;
        let line = c.get(2)?.as_str().parse::<u64>().ok()?;
        Some((path, line.max(1)))
    })
}
