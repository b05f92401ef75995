//! ppo-train: see `rto_stages::ppo`.
fn main() -> anyhow::Result<()> {
    rto_stages::ppo::cli(rto_data::cli::parse_with_config()?)
}
