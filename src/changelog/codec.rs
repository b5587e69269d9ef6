//! Typed payloads: what a changelog entry's bytes mean to its caller.
//!
//! The log stores bytes. [`ChangeManager`](super::ChangeManager) and
//! [`RecoveryLoop`](crate::recovery::RecoveryLoop) are typed over a
//! [`Payload`], which encodes on record and decodes on recovery; bytes that
//! do not decode make the entry a poison entry, quarantined rather than
//! retried. [`FieldWriter`] / [`FieldReader`] are a small self-describing
//! format for payloads made of a few strings and integers, so no
//! serialization framework is needed for the common case.

use super::error::DecodeError;

/// A type that can be stored as a changelog entry's payload.
///
/// `decode(&encode(x))` must return a value equal to `x`. Decoding must not
/// panic on arbitrary bytes: entries outlive program versions, and a
/// recoverer may read an entry that a newer (or buggy) writer recorded.
///
/// # Examples
///
/// ```
/// use leasehold::changelog::{DecodeError, FieldReader, FieldWriter, Payload};
///
/// #[derive(Debug, PartialEq)]
/// struct Write { object: String, new_blob: String, old_blob: Option<String> }
///
/// impl Payload for Write {
///     fn encode(&self) -> Vec<u8> {
///         let mut w = FieldWriter::new(b"write/1");
///         w.str(&self.object).str(&self.new_blob).opt_str(self.old_blob.as_deref());
///         w.finish()
///     }
///     fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
///         let mut r = FieldReader::new(bytes, b"write/1")?;
///         let write = Write { object: r.string()?, new_blob: r.string()?, old_blob: r.opt_string()? };
///         r.finish()?;
///         Ok(write)
///     }
/// }
///
/// let write = Write { object: "a".into(), new_blob: "a.2".into(), old_blob: Some("a.1".into()) };
/// assert_eq!(Write::decode(&write.encode()), Ok(write));
/// assert!(Write::decode(b"garbage").is_err());
/// ```
pub trait Payload: Sized + Send + Sync + 'static {
    /// The bytes to store.
    fn encode(&self) -> Vec<u8>;

    /// Parses stored bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the bytes are not a valid encoding.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

impl Payload for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
}

impl Payload for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError::new(e.to_string()))
    }
}

/// Eight bytes, little-endian: the encoding of a `u64` since in the durable
/// lease tables.
impl Payload for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bytes: [u8; 8] = bytes
            .try_into()
            .map_err(|_| DecodeError::new(format!("a u64 is 8 bytes, not {}", bytes.len())))?;
        Ok(u64::from_le_bytes(bytes))
    }
}

/// Writes a tagged sequence of length-prefixed fields.
///
/// The encoding is `tag_len:u8 tag (field)*`, each field a kind byte and,
/// for strings and bytes, a little-endian `u32` length. The tag names the
/// payload type and its version, so a reader rejects bytes meant for another
/// type instead of misreading them.
#[derive(Debug, Clone)]
pub struct FieldWriter {
    bytes: Vec<u8>,
}

const KIND_BYTES: u8 = 1;
const KIND_NONE: u8 = 2;
const KIND_U64: u8 = 3;

impl FieldWriter {
    /// Starts a payload with the given type tag (at most 255 bytes).
    ///
    /// # Panics
    ///
    /// If `tag` is longer than 255 bytes.
    pub fn new(tag: &[u8]) -> Self {
        let len = u8::try_from(tag.len()).expect("payload tags are at most 255 bytes");
        let mut bytes = Vec::with_capacity(64);
        bytes.push(len);
        bytes.extend_from_slice(tag);
        FieldWriter { bytes }
    }

    /// Appends raw bytes.
    ///
    /// # Panics
    ///
    /// If `value` is 4 GiB or longer.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        let len = u32::try_from(value.len()).expect("payload fields are below 4 GiB");
        self.bytes.push(KIND_BYTES);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    /// Appends a string.
    pub fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    /// Appends an optional string.
    pub fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(value),
            None => {
                self.bytes.push(KIND_NONE);
                self
            }
        }
    }

    /// Appends an integer.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.push(KIND_U64);
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// The encoded payload.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// Reads what a [`FieldWriter`] wrote, field by field, in the same order.
#[derive(Debug, Clone)]
pub struct FieldReader<'a> {
    rest: &'a [u8],
}

impl<'a> FieldReader<'a> {
    /// Checks the type tag and starts reading the fields.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the bytes do not start with `tag`.
    pub fn new(bytes: &'a [u8], tag: &[u8]) -> Result<Self, DecodeError> {
        let (&len, rest) = bytes
            .split_first()
            .ok_or_else(|| DecodeError::new("empty payload"))?;
        let len = usize::from(len);
        if rest.len() < len || &rest[..len] != tag {
            return Err(DecodeError::new(format!(
                "payload tag is not {:?}",
                String::from_utf8_lossy(tag)
            )));
        }
        Ok(FieldReader { rest: &rest[len..] })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::new(format!("payload truncated in {what}")));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn kind(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1, "a field kind")?[0])
    }

    fn bytes_after_kind(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.take(4, "a field length")?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        self.take(len, "a field")
    }

    /// The next field, as bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the next field is missing or not bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        match self.kind()? {
            KIND_BYTES => self.bytes_after_kind(),
            kind => Err(DecodeError::new(format!(
                "expected a bytes field, found kind {kind}"
            ))),
        }
    }

    /// The next field, as a string.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the next field is missing, not bytes, or not UTF-8.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError::new(e.to_string()))
    }

    /// The next field, as an optional string.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the next field is missing, or neither a string nor
    /// "none".
    pub fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.kind()? {
            KIND_NONE => Ok(None),
            KIND_BYTES => {
                let bytes = self.bytes_after_kind()?;
                String::from_utf8(bytes.to_vec())
                    .map(Some)
                    .map_err(|e| DecodeError::new(e.to_string()))
            }
            kind => Err(DecodeError::new(format!(
                "expected an optional string, found kind {kind}"
            ))),
        }
    }

    /// The next field, as an integer.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the next field is missing or not an integer.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        match self.kind()? {
            KIND_U64 => {
                let bytes = self.take(8, "an integer")?;
                Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
            }
            kind => Err(DecodeError::new(format!(
                "expected an integer field, found kind {kind}"
            ))),
        }
    }

    /// Checks that every field was read.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if bytes are left over.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::new(format!(
                "{} unexpected trailing bytes",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut w = FieldWriter::new(b"t/1");
        w.str("a")
            .opt_str(None)
            .opt_str(Some("b"))
            .u64(42)
            .bytes(&[0, 1]);
        let bytes = w.finish();
        let mut r = FieldReader::new(&bytes, b"t/1").unwrap();
        assert_eq!(r.string().unwrap(), "a");
        assert_eq!(r.opt_string().unwrap(), None);
        assert_eq!(r.opt_string().unwrap(), Some("b".to_owned()));
        assert_eq!(r.u64().unwrap(), 42);
        assert_eq!(r.bytes().unwrap(), &[0, 1]);
        r.finish().unwrap();
    }

    #[test]
    fn wrong_tag_truncation_and_trailing_bytes_are_decode_errors() {
        let mut w = FieldWriter::new(b"t/1");
        w.str("hello");
        let bytes = w.finish();
        assert!(FieldReader::new(&bytes, b"t/2").is_err());
        let mut r = FieldReader::new(&bytes[..bytes.len() - 1], b"t/1").unwrap();
        assert!(r.string().is_err());
        let mut longer = bytes.clone();
        longer.push(9);
        let mut r = FieldReader::new(&longer, b"t/1").unwrap();
        r.string().unwrap();
        assert!(r.finish().is_err());
        assert!(FieldReader::new(&[], b"t/1").is_err());
    }
}
