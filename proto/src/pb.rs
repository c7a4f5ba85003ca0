//! The gRPC and bus wire types generated from `proto/switchboard/v1/*.proto`
//! (edge ↔ room, room ↔ room over Redis), and their conversions to and from the
//! client protocol types in [`convert`].

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    rust_2018_idioms
)]
mod generated {
    tonic::include_proto!("switchboard.v1");
}

pub mod convert;

pub use generated::*;
