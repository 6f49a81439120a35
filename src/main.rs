//! The `preview-operator` command line: `run` the controller, print the `crd`, `render` a
//! preview's objects, or read a `test-report`.
#![forbid(unsafe_code)]

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use preview_operator::cli::{Cli, Command, ReportFormat};

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { dir: None } => {
            let yaml = preview_operator::crd::render().context("failed to render the CRDs")?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("failed to write the CRDs")
        }
        Command::Crd { dir: Some(dir) } => {
            for (file, crd) in preview_operator::crd::all() {
                let yaml = preview_operator::crd::render_one(file, &crd)
                    .context("failed to render a CRD")?;
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("failed to write {}", path.display()))?;
            }
            Ok(())
        }
        Command::Render {
            preview,
            template,
            class,
            output,
        } => render(&preview, template.as_deref(), class.as_deref(), output),
        Command::TestReport { format, file } => test_report(format, &file),
        // One thread: the operator waits on the API server, it does not compute (at 1000
        // previews it used a fifth of a core), and a single thread keeps one allocator arena
        // instead of one per worker (each held megabytes of freed memory at that scale).
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(preview_operator::runtime::run(*args)),
    }
}

/// Reads the files and prints what the operator would apply, or exits 1 with the reason.
fn render(
    preview: &std::path::Path,
    template: Option<&std::path::Path>,
    class: Option<&std::path::Path>,
    format: preview_operator::render::Format,
) -> anyhow::Result<()> {
    use preview_operator::render::{self, RenderError};
    fn load<K: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<K, RenderError> {
        let text = std::fs::read_to_string(path).map_err(|e| RenderError::Parse {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        render::parse(&path.display().to_string(), &text)
    }
    let result = (|| {
        let pe = load(preview)?;
        let template = template.map(load).transpose()?;
        let class = class.map(load).transpose()?;
        render::render_as(format, &pe, template.as_ref(), class.as_ref())
    })();
    match result {
        Ok(yaml) => std::io::stdout()
            .write_all(yaml.as_bytes())
            .context("failed to write the objects"),
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(1);
        }
    }
}

/// Reads a test log (or a JUnit file) as the operator reads a failed test's log, and prints
/// what it would report.
fn test_report(format: ReportFormat, file: &std::path::Path) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
    // Logs are read as UTF-8 with anything else replaced, as the operator's client does.
    let text = String::from_utf8_lossy(&bytes);
    let (tail, marked) = preview_operator::controller::logs::read_offline(&text);
    let log = preview_operator::controller::logs::kept(&tail, marked, true);
    let test = file
        .file_stem()
        .map_or_else(|| "test".to_string(), |s| s.to_string_lossy().into_owned());
    let (json, markdown) = preview_operator::scm::check::test_report(&test, log);
    let printed = match format {
        ReportFormat::Json => {
            serde_json::to_string_pretty(&json).context("failed to render the report")? + "\n"
        }
        ReportFormat::Markdown => markdown,
    };
    std::io::stdout()
        .write_all(printed.as_bytes())
        .context("failed to write the report")
}
