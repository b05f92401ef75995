//! make-pairs: see `rto_stages::pairs`.
fn main() {
    rto_cli::main_with(|| rto_stages::pairs::cli(rto_data::cli::parse_with_config()?))
}
