//! sft-train: see `rto_stages::sft`.
fn main() {
    rto_cli::main_with(|| rto_stages::sft::cli(rto_data::cli::parse_with_config()?))
}
