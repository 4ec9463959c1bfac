//! `netmigrate`: the command-line entry point that wires every component.

use bench::{cli, commands};
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let cli = <cli::Cli as clap::Parser>::parse();
    let result = match cli.command {
        cli::Command::Server(args) => commands::server::run(args),
        cli::Command::Switch(args) => commands::switch::run(args),
        cli::Command::Migrate(args) => commands::migrate::run(args),
        cli::Command::Ycsb(args) => commands::ycsb::run(*args),
        cli::Command::Experiment(args) => commands::experiment::run(*args),
        cli::Command::Compare(args) => commands::compare::run(*args),
        cli::Command::CoreLatency(args) => commands::core_latency::run(args),
        cli::Command::Coordinator(args) => commands::coordinator::run(args),
        cli::Command::CheckHistory(args) => commands::check_history::run(args),
        cli::Command::Simulate(args) => commands::simulate::run(args),
    };
    if let Err(error) = result {
        eprintln!("netmigrate: error: {error:#}");
        std::process::exit(1);
    }
}
