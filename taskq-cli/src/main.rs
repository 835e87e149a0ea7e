//! `taskq`: the command line for a taskq store. Run `taskq --help`; README.md, "The taskq
//! command", shows each command and the exit codes (also in [`exit`]).

mod cli;
mod commands;
mod exit;
mod output;
mod schedules;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // A usage error: clap's message, and with `--json` anywhere on the line (it
            // may be the argument clap could not place) the same error document as every
            // other failure, so a script reading stdout is never left with nothing.
            let json = std::env::args_os().skip(1).any(|a| a == "--json");
            let message = first_line(&e.to_string()).to_string();
            let _ = e.print();
            return report_failure(exit::Failure::new(exit::USAGE, message), json, false);
        }
        Err(e) => {
            // Help and version go to stdout and succeed.
            let _ = e.print();
            return ExitCode::from(exit::OK);
        }
    };
    let json = cli.json;
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(commands::run(cli)),
        Err(e) => Err(exit::Failure::new(
            exit::FAILED,
            format!("cannot start the async runtime: {e}"),
        )),
    };
    match result {
        Ok(report) => {
            if json {
                println!("{}", report.json);
            } else {
                println!("{}", output::printable(&report.human));
            }
            ExitCode::from(exit::OK)
        }
        Err(f) => report_failure(f, json, true),
    }
}

/// Prints a failure (to stderr for people unless clap printed it already, and as a JSON
/// error document on stdout with `--json`) and returns its exit code.
fn report_failure(f: exit::Failure, json: bool, to_stderr: bool) -> ExitCode {
    if to_stderr {
        eprintln!("taskq: {}", output::printable(&f.message));
    }
    if json {
        let doc = serde_json::json!({
            "error": { "kind": f.kind, "code": f.code, "message": f.message }
        });
        println!("{doc}");
    }
    ExitCode::from(f.code)
}

/// The first line of clap's message, without its `error: ` prefix.
fn first_line(message: &str) -> &str {
    let line = message.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line)
}
