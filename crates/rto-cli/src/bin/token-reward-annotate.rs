//! token-reward-annotate: see `rto_stages::annotate` (and `rto_stages::inspect` for `show`).
fn main() {
    rto_cli::main_with(|| rto_stages::annotate::main_cli(rto_data::cli::parse_with_config()?))
}
