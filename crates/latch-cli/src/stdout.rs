//! Everything `latch` prints on stdout goes through here (main.rs points `println!` at
//! [`print`]). A reader that stops early (`latch policy check | head`) closes the pipe: that
//! ends `latch` at once, quietly and with exit status 0, as the reader asked. Rust ignores
//! SIGPIPE, so the write fails with EPIPE instead of killing the process, and the standard
//! `println!` would panic on it. SIGPIPE stays ignored on purpose: the AWS SDK's connections
//! write with `writev`, and a peer closing one must be an error the SDK retries, not a signal
//! that ends the process.

use std::fmt;
use std::io::{self, Write};

use crate::CliError;

/// Writes formatted text to stdout; a closed pipe ends the process quietly (see the module).
pub fn print(args: fmt::Arguments<'_>) {
    let result = io::stdout().lock().write_fmt(args);
    if let Err(e) = result {
        exit_if_reader_left(&e);
        // Another failure (a full disk behind a redirect): say so once, and fail.
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Writes bytes to stdout; a closed pipe ends the process quietly, another failure is an error.
pub fn write_all(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) => {
            exit_if_reader_left(&e);
            Err(CliError::Usage(format!("writing to stdout: {e}")))
        }
    }
}

fn exit_if_reader_left(e: &io::Error) {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
}
