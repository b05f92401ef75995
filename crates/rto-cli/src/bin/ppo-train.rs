//! ppo-train: see `rto_stages::ppo` (and `rto_stages::metrics::show` for `show`).
fn main() {
    rto_cli::main_with(|| {
        rto_stages::metrics::show::main_cli(rto_data::cli::parse_with_config()?, rto_stages::ppo::cli)
    })
}
