//! Helper process for the `review2_*` reproducers. Subcommands by argv:
//!
//! | subcommand | what it does |
//! |---|---|
//! | `create-mode NAME OCTAL` | `SharedBuffer::create(NAME, mode OCTAL)`; prints `created` or `error: ...` |
//!
//! Exit codes: 0 created, 1 create failed, 2 usage.

use ipc_core::{BufferConfig, SharedBuffer};

fn usage() -> ! {
    eprintln!("usage: review2-peer SUBCOMMAND ARGS (see the source)");
    std::process::exit(2)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("create-mode") if a.len() == 4 => {
            let mode = u32::from_str_radix(&a[3], 8).unwrap_or_else(|_| usage());
            let r = SharedBuffer::create(
                &a[2],
                &BufferConfig {
                    capacity: 4,
                    max_message: 64,
                    mode,
                    budget: 0,
                },
            );
            match r {
                Ok(_) => println!("created"),
                Err(e) => {
                    println!("error: {e}");
                    std::process::exit(1)
                }
            }
        }
        _ => usage(),
    }
}
