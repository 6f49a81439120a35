//! The `preview-operator` command line.
#![forbid(unsafe_code)]

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "preview-operator",
    version,
    about = "Short-lived, tested environments for pull requests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the PreviewEnvironment CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let yaml = preview_operator::crd::render().context("failed to render the CRD")?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("failed to write the CRD")?;
        }
    }
    Ok(())
}
