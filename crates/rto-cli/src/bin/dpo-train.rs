//! dpo-train: see `rto_stages::dpo`.
fn main() -> anyhow::Result<()> {
    rto_stages::dpo::cli(rto_data::cli::parse_with_config()?)
}
