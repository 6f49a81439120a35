//! Untrusted text on its way to a pull request: what a test printed, JUnit case names and
//! messages, a pod's message. The code of the pull request controls all of it, and it lands in
//! the PR comment, the GitLab note and the check run as the operator's own words, so it must
//! not be able to mention anyone, cross-reference an issue, or bring its own markdown (links,
//! images, HTML, tables, headings).
//!
//! Every writer goes through one of four functions:
//! - [`block`]: text of any number of lines, as a fenced code block nothing inside can close;
//! - [`inline`]: one line inside markdown (a table cell, a heading, a sentence), every
//!   markdown character escaped;
//! - [`plain_line`] and [`defuse`]: fields GitHub and GitLab show as plain text (a check run's
//!   title, annotations, a commit status's description), where only mentions matter.
//!
//! Mentions are broken with a zero-width space after the `@` (and after the `#` or `!` of a
//! numbered reference): GitHub's and GitLab's reference filters want a name character right
//! after the sigil, so `@\u{200B}org/team` is text on both, inside and outside code, and still
//! reads `@org/team`. HTML entities (`&#64;`) would not do: both decode them before looking
//! for mentions, and inside a code block they show as written.
//!
//! A line starting with `/` gets a zero-width space before it too: GitLab runs the quick
//! actions (`/merge`, `/approve`, `/close`...) of a note the operator posts, as the operator,
//! and finds them with a regular expression (`Gitlab::QuickActions::Extractor`) that takes a
//! code block to end at the first line of three backticks, whatever fence opened it. So a
//! fence cannot protect a command line; a line that does not start with `/` is no command.

/// Written after a sigil to break the reference it starts; invisible when rendered.
const BREAK: char = '\u{200B}';

/// `text` with every `@mention` and numbered reference (`#12` on both providers, `!12` a
/// GitLab merge request) broken, and no line starting with `/` (a GitLab quick action), so
/// that posting it notifies nobody, links nothing and runs no command.
pub fn defuse(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    let mut chars = text.chars().peekable();
    // GitLab deletes every `\r` before looking for commands: a `\r` starts a line too.
    let mut line_start = true;
    while let Some(c) = chars.next() {
        if c == '/' && line_start {
            out.push(BREAK);
        }
        out.push(c);
        let breaks = match c {
            '@' => true,
            '#' | '!' => chars.peek().is_some_and(char::is_ascii_digit),
            _ => false,
        };
        if breaks {
            out.push(BREAK);
        }
        line_start = matches!(c, '\n' | '\r');
    }
    out
}

/// `text` (any number of lines) as a fenced code block, ending with a newline. The fence is
/// longer than the longest run of backticks in the text, so no line of it can close the block
/// (CommonMark: a closing fence is at least as long as the opening one); inside, nothing is
/// markdown or HTML. Mentions are defused too: a reader copying the text, or a renderer that
/// looked inside code, notifies nobody.
pub fn block(text: &str) -> String {
    let text = defuse(text.trim_end_matches(['\n', '\r']));
    let longest = text
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or_default();
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}\n{text}\n{fence}\n")
}

/// `text` as one line of markdown that shows as written: line breaks become spaces and every
/// ASCII punctuation character is backslash-escaped (CommonMark allows escaping each of them),
/// so it opens no link, image, emphasis, code span, HTML tag or entity, autolinks no URL, and a
/// `|` stays inside its table cell (GFM's escape for a pipe in a cell).
pub fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in defuse(text).chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `text` as one line of plain text (a check run's or an annotation's title, a commit
/// status's description): line breaks become spaces, mentions are defused.
pub fn plain_line(text: &str) -> String {
    defuse(text).replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `text` holds a mention GitHub or GitLab would act on: a sigil followed by a
    /// name character (GitHub: `[a-z0-9]`; GitLab: also `_` and `.`).
    fn has_mention(text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        chars.windows(2).any(|w| {
            (w[0] == '@' && (w[1].is_ascii_alphanumeric() || w[1] == '_' || w[1] == '.'))
                || (matches!(w[0], '#' | '!') && w[1].is_ascii_digit())
        })
    }

    /// What a reader sees of `text` once rendered: the breaks are invisible.
    fn shown(text: &str) -> String {
        text.replace(BREAK, "")
    }

    #[test]
    fn mentions_of_people_teams_and_everyone_are_broken_but_still_read_the_same() {
        let hostile = "ping @someone, @org/team and @all (cc @here); fixes #12, see !7, a@b.c";
        let out = defuse(hostile);
        assert!(!has_mention(&out), "{out:?}");
        assert_eq!(shown(&out), hostile);
        assert!(out.contains("@\u{200B}org/team") && out.contains("@\u{200B}all"));
        assert_eq!(defuse("no sigils # here ! 1"), "no sigils # here ! 1");
    }

    #[test]
    fn no_line_starts_a_gitlab_quick_action() {
        let hostile = "/merge\nok\n```\n/approve\n\r/close\r\n/label ~x\n a/b /c";
        for out in [defuse(hostile), block(hostile)] {
            // As GitLab reads it: carriage returns deleted, then `^/` on any line.
            let read = out.replace('\r', "");
            assert!(
                read.lines().all(|l| !l.starts_with('/')),
                "a command line in {out:?}"
            );
        }
        assert_eq!(shown(&defuse(hostile)), hostile, "and reads the same");
        assert_eq!(defuse("a/b /c"), "a/b /c", "only a line's first slash");
    }

    #[test]
    fn a_block_cannot_be_closed_from_inside_however_many_backticks_it_holds() {
        let hostile = "FAIL\n```\n@org/team ![x](http://evil) <img src=x>\n````\n``````\nend";
        let out = block(hostile);
        let fence = "```````";
        assert!(out.starts_with(&format!("{fence}\n")), "{out}");
        assert!(out.ends_with(&format!("\n{fence}\n")), "{out}");
        // Only the first and the last line are fences of that length (or longer).
        let closing = out
            .lines()
            .filter(|l| l.trim_start().starts_with(fence))
            .count();
        assert_eq!(closing, 2, "{out}");
        assert!(!has_mention(&out), "{out}");
        assert_eq!(
            shown(&out),
            format!("{fence}\n{hostile}\n{fence}\n"),
            "the text itself is unchanged"
        );
    }

    #[test]
    fn a_block_has_a_fence_of_three_at_least_and_no_trailing_blank_line() {
        assert_eq!(block("one\ntwo\n"), "```\none\ntwo\n```\n");
        assert_eq!(block("a `b` c"), "```\na `b` c\n```\n");
        assert_eq!(block("````"), "`````\n````\n`````\n");
    }

    #[test]
    fn inline_text_brings_no_links_images_html_or_cells_of_its_own() {
        let hostile = "a | b ![x](http://evil) [link](https://evil) <img src=x> **bold** `c`\n# heading &#64;all @org/team www.evil.com";
        let out = inline(hostile);
        assert!(!out.contains('\n'), "{out}");
        assert!(!has_mention(&out), "{out}");
        // Every markdown character is escaped: no unescaped `|`, `[`, `!`, `<`, `*`, `` ` ``,
        // `#`, `&`, `.` or `:` is left.
        let mut escaped = false;
        for c in out.chars() {
            if !escaped && c.is_ascii_punctuation() && c != '\\' {
                panic!("unescaped {c:?} in {out}");
            }
            escaped = !escaped && c == '\\';
        }
        assert!(out.contains(r"a \| b \!\[x\]\(http\:\/\/evil\)"), "{out}");
        assert!(out.contains(r"\<img src\=x\>"), "{out}");
    }

    #[test]
    fn a_table_cell_keeps_its_pipe_and_its_neighbours() {
        let row = format!("| {} | passed |", inline("e2e | **failed** |"));
        // GFM splits a row at unescaped pipes only: the row's own three, two cells.
        let unescaped = row
            .char_indices()
            .filter(|(i, c)| *c == '|' && (*i == 0 || &row[i - 1..*i] != "\\"))
            .count();
        assert_eq!(unescaped, 3, "{row}");
    }

    #[test]
    fn plain_lines_are_one_line_without_mentions() {
        assert_eq!(
            shown(&plain_line("TestFailed: boom\n@all look")),
            "TestFailed: boom @all look"
        );
        assert!(!has_mention(&plain_line("@all")));
    }
}
