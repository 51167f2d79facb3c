//! Object ids: the blake3 hash of an object's bytes.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// The name of an object in the store: the blake3 hash of its bytes.
///
/// Equality is constant-time (it is `blake3::Hash`'s). `Display` and serde use
/// the 64-digit lowercase hex form; [`ObjectId::short`] gives the 12-digit form
/// for the UI. Parsing accepts either case and says what is wrong with input
/// that is not an id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectId(blake3::Hash);

impl ObjectId {
    /// Number of hex digits in a full id.
    pub const HEX_LEN: usize = 64;
    /// Number of hex digits in [`ObjectId::short`].
    pub const SHORT_LEN: usize = 12;

    /// The id of `bytes`: their blake3 hash.
    pub fn of(bytes: &[u8]) -> Self {
        Self(blake3::hash(bytes))
    }

    /// Wrap a hash computed elsewhere (for example by a streaming hasher).
    pub fn from_hash(hash: blake3::Hash) -> Self {
        Self(hash)
    }

    /// The underlying hash.
    pub fn as_hash(&self) -> &blake3::Hash {
        &self.0
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The full 64-digit lowercase hex form (same as `Display`).
    pub fn to_hex(&self) -> String {
        self.0.to_hex().to_string()
    }

    /// The first 12 hex digits, for display. Not guaranteed unique: resolve
    /// user input with [`Store::resolve`](super::Store::resolve).
    pub fn short(&self) -> String {
        let hex = self.0.to_hex();
        hex[..Self::SHORT_LEN].to_string()
    }
}

/// Byte order. Only for sorting listings; equality stays constant-time.
impl Ord for ObjectId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl PartialOrd for ObjectId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.0.to_hex())
    }
}

/// Text that is not an object id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an object id: {reason}")]
pub struct IdParseError {
    /// The input, cut to 80 characters.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl IdParseError {
    fn new(input: &str, reason: String) -> Self {
        let input = match input.char_indices().nth(80) {
            Some((cut, _)) => format!("{}...", &input[..cut]),
            None => input.to_string(),
        };
        Self { input, reason }
    }
}

impl FromStr for ObjectId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((index, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(IdParseError::new(
                s,
                format!("`{c}` at byte {index} is not a hex digit"),
            ));
        }
        if s.len() != Self::HEX_LEN {
            return Err(IdParseError::new(
                s,
                format!("expected {} hex digits, found {}", Self::HEX_LEN, s.len()),
            ));
        }
        blake3::Hash::from_hex(s)
            .map(Self)
            .map_err(|e| IdParseError::new(s, e.to_string()))
    }
}

impl serde::Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = ObjectId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-digit hex object id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ObjectId, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(HexVisitor)
    }
}
