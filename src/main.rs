//! The `preview-operator` command line: `run` the controller, or print the `crd`.
#![forbid(unsafe_code)]

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use preview_operator::cli::{Cli, Command};

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
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(preview_operator::runtime::run(*args)),
    }
}
