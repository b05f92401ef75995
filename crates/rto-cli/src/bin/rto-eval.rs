//! rto-eval: see `rto_stages::evaluate`.
fn main() -> anyhow::Result<()> {
    rto_stages::evaluate::cli(rto_data::cli::parse_with_config()?)
}
