//! dpo-train: see `rto_stages::dpo`.
fn main() {
    rto_cli::main_with(|| rto_stages::dpo::cli(rto_data::cli::parse_with_config()?))
}
