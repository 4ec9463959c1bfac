//! `netmigrate check-history PATH`: the linearizability check of a history file, as
//! `--history` writes it or as any client in that vocabulary does.

use super::ycsb::check_and_print;
use super::{fail, CommandError};
use crate::cli::CheckHistoryArgs;
use std::io::BufReader;

pub fn run(args: CheckHistoryArgs) -> Result<(), CommandError> {
    let file = std::fs::File::open(&args.path)
        .map_err(|e| CommandError(format!("cannot open {}: {e}", args.path.display())))?;
    let history = crate::history::read(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| CommandError(format!("{}: {e}", args.path.display())))?;
    eprintln!("{}: {} operations read", args.path.display(), history.len());
    let result = check_and_print(&history);
    if result.violations > 0 {
        return fail(format!(
            "{} key(s) of {} are not linearizable",
            result.violations,
            args.path.display()
        ));
    }
    if result.unchecked_keys > 0 {
        return fail(format!(
            "{} key(s) of {} could not be decided within the search budget",
            result.unchecked_keys,
            args.path.display()
        ));
    }
    println!(
        "linearizable: {} operations on {} keys",
        result.checked_ops, result.keys
    );
    Ok(())
}
