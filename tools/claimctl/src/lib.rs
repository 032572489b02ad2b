//! `claimctl`, the operator command line: the operations that work on the ownership table directly.
pub mod import;
