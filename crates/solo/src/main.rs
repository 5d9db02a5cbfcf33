//! The `solo` binary: `solo server` runs the kernel; the other commands are its clients.

// A command-line tool writes its results to stdout.
#![allow(clippy::print_stdout)]

mod config;
mod server;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "solo",
    version,
    about = "Solo: a user-level operating system for LLM agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server in the foreground (logs to stderr; stops on SIGTERM or ctrl-c).
    Server(server::ServerArgs),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Version => {
            println!("Solo {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
