//! rto-eval: see `rto_stages::evaluate`.
fn main() {
    rto_cli::main_with(|| rto_stages::evaluate::cli(rto_data::cli::parse_with_config()?))
}
