//! Prints the CRDs; `cargo run -p offpeak-api --example print_crds`.
fn main() {
    print!("{}", offpeak_api::crds_yaml());
}
