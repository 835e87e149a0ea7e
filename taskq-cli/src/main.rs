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
        Err(e) => {
            // Help and version go to stdout and succeed; usage errors exit with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
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
                println!("{}", report.human);
            }
            ExitCode::from(exit::OK)
        }
        Err(f) => {
            eprintln!("taskq: {}", f.message);
            if json {
                let doc = serde_json::json!({
                    "error": { "kind": f.kind, "code": f.code, "message": f.message }
                });
                println!("{doc}");
            }
            ExitCode::from(f.code)
        }
    }
}
