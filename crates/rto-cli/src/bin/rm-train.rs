//! rm-train: see `rto_stages::rm`.
fn main() -> anyhow::Result<()> {
    rto_stages::rm::cli(rto_data::cli::parse_with_config()?)
}
