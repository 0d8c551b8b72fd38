//! Parse and validate benchmark (filled in below).
fn main() {}
