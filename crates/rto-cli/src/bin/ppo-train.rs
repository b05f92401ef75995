//! ppo-train: see `rto_stages::ppo`.
fn main() {
    rto_cli::main_with(|| rto_stages::ppo::cli(rto_data::cli::parse_with_config()?))
}
