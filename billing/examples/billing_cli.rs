//! The `offpeak billing` subcommands as a stand-alone program, for trying them
//! without the operator binary:
//! `cargo run -p offpeak-billing --example billing_cli -- replay --facts ... --period 2026-11`.

use clap::Parser;
use offpeak_billing::cli::{BillingCommand, run};

#[derive(Parser)]
#[command(name = "offpeak billing")]
struct Cli {
    #[command(subcommand)]
    command: BillingCommand,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    run(cli.command, &mut out).await
}
