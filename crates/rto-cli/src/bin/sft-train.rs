//! sft-train: see `rto_stages::sft`.
fn main() -> anyhow::Result<()> {
    rto_stages::sft::cli(rto_data::cli::parse_with_config()?)
}
