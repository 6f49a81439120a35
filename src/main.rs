//! The `preview-operator` command line: `run` the controller, or print the `crd`.
#![forbid(unsafe_code)]

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use preview_operator::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            let yaml = preview_operator::crd::render().context("failed to render the CRD")?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("failed to write the CRD")
        }
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(preview_operator::runtime::run(*args)),
    }
}
