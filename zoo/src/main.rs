//! The `anneal` command line (in progress).

fn main() {
    eprintln!("anneal: the command line is not implemented yet; see the README's status table");
    std::process::exit(2);
}
