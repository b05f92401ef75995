//! rm-train: see `rto_stages::rm`.
fn main() {
    rto_cli::main_with(|| rto_stages::rm::cli(rto_data::cli::parse_with_config()?))
}
