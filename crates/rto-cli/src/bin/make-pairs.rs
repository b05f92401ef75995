//! make-pairs: see `rto_stages::pairs`.
fn main() -> anyhow::Result<()> {
    rto_stages::pairs::cli(rto_data::cli::parse_with_config()?)
}
