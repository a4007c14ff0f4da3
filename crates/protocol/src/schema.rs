//! JSON Schemas of the HTTP bodies' building blocks, for the ledger's
//! OpenAPI description (feature `openapi`; the ledger turns it on, the rules
//! themselves never need it).
//!
//! The same 32 bytes travel two ways: the API views (`api.rs`) write keys,
//! hashes and commitments as 64 lowercase hex digits ([`Hex32`]); a signed
//! instruction and the events it causes carry them as serde writes a byte
//! array, a JSON array of 32 integers ([`crate::Pubkey`], [`Bytes32`]). The
//! types here are schema-only: fields name them with
//! `#[schema(value_type = …)]` so that the schema says what the JSON is, not
//! what the Rust field is.

use crate::crypto::{Pubkey, VrfProof};
use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

fn byte() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt8)))
        .minimum(Some(0))
        .maximum(Some(255))
}

fn bytes(n: usize, description: &str) -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(byte())
        .min_items(Some(n))
        .max_items(Some(n))
        .description(Some(description))
        .into()
}

fn hex(digits: usize, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^[0-9a-f]{{{digits}}}$")))
        .min_length(Some(digits))
        .max_length(Some(digits))
        .description(Some(description))
        .into()
}

/// Declares a schema-only type: its component name is the type's name.
macro_rules! schema_type {
    ($(#[$doc:meta])* $name:ident => $schema:expr) => {
        $(#[$doc])*
        pub struct $name;
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }
        impl ToSchema for $name {}
    };
}

schema_type!(
    /// A public key, BLAKE3 hash or commitment in the API views: 64 lowercase hex digits.
    Hex32 => hex(64, "32 bytes (an ed25519 public key, a BLAKE3 hash or a commitment) as exactly 64 lowercase hex digits: the only spelling accepted")
);

schema_type!(
    /// An ed25519 signature in a blob request's header: 128 lowercase hex digits.
    Hex64 => hex(128, "64 bytes (an ed25519 signature) as exactly 128 lowercase hex digits")
);

schema_type!(
    /// A 32-byte hash inside a signed instruction or event: a JSON array of 32 integers.
    Bytes32 => bytes(32, "32 bytes (a BLAKE3 hash, commitment or seal) as a JSON array of 32 integers 0-255, as signed instructions and events carry them")
);

schema_type!(
    /// An ed25519 signature inside a signed instruction: a JSON array of 64 integers.
    Bytes64 => bytes(64, "an ed25519 signature: 64 bytes as a JSON array of 64 integers 0-255")
);

schema_type!(
    /// `(model, task)`: a task a node supports.
    ModelTask => ArrayBuilder::new()
        .items(ArrayItems::False)
        .prefix_items([
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)))
                .minimum(Some(0))
                .description(Some("model id")),
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt32)))
                .minimum(Some(1))
                .description(Some("task, 1-based")),
        ])
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some("a task a node supports: [model id, task (1-based)]"))
        .into()
);

schema_type!(
    /// `(output, axis)` of an [`crate::OutputCheck`]'s `indices_of`.
    IndicesOf => ArrayBuilder::new()
        .items(ArrayItems::False)
        .prefix_items([
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("the float output the indices point into")),
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt32)))
                .minimum(Some(0))
                .description(Some("the axis they index")),
        ])
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some("[output name, axis]: this check's values are indices into that float output along that axis"))
        .into()
);

impl PartialSchema for Pubkey {
    fn schema() -> RefOr<Schema> {
        bytes(
            32,
            "an ed25519 public key as a JSON array of 32 integers 0-255, as signed instructions and events carry it (the API views write keys as 64 hex digits instead)",
        )
    }
}

impl ToSchema for Pubkey {}

impl PartialSchema for VrfProof {
    fn schema() -> RefOr<Schema> {
        bytes(
            80,
            "an RFC 9381 ECVRF-EDWARDS25519-SHA512-TAI proof: 80 bytes as a JSON array of integers 0-255",
        )
    }
}

impl ToSchema for VrfProof {}
