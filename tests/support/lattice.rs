//! Partially ordered frontiers for the lease tests: a two-dimensional
//! product timestamp and the antichain of such timestamps, written here (no
//! dependency), with the crate's payload encoding for the durable tables.
#![allow(dead_code)]

use leasehold::changelog::{DecodeError, FieldReader, FieldWriter, Payload};
use leasehold::lease::Since;

/// A product timestamp `(epoch, round)`, ordered per coordinate: `(2, 0)`
/// and `(1, 5)` are incomparable. Deliberately not `Ord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Product(pub u64, pub u64);

impl Since for Product {
    fn less_equal(&self, other: &Self) -> bool {
        self.0 <= other.0 && self.1 <= other.1
    }
    fn join(&self, other: &Self) -> Self {
        Product(self.0.max(other.0), self.1.max(other.1))
    }
    fn meet(&self, other: &Self) -> Self {
        Product(self.0.min(other.0), self.1.min(other.1))
    }
}

impl Payload for Product {
    fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new(b"product/1");
        w.u64(self.0).u64(self.1);
        w.finish()
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = FieldReader::new(bytes, b"product/1")?;
        let value = Product(r.u64()?, r.u64()?);
        r.finish()?;
        Ok(value)
    }
}

/// A frontier: the minimal elements of an upward-closed set of product
/// timestamps ("everything at or after one of these is still readable").
/// A later frontier is a smaller set; the empty antichain is the top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Antichain(Vec<Product>);

impl Antichain {
    /// The antichain of the minimal elements of `elements`.
    pub fn new(elements: impl IntoIterator<Item = Product>) -> Self {
        let all: Vec<Product> = elements.into_iter().collect();
        let mut minimal: Vec<Product> = Vec::new();
        for &p in &all {
            let dominated = all.iter().any(|q| q != &p && q.less_equal(&p));
            if !dominated && !minimal.contains(&p) {
                minimal.push(p);
            }
        }
        minimal.sort_by_key(|p| (p.0, p.1));
        Antichain(minimal)
    }

    pub fn elements(&self) -> &[Product] {
        &self.0
    }
}

impl Since for Antichain {
    /// `self <= other`: every element of `other` is at or after an element
    /// of `self` (`other`'s set is inside `self`'s).
    fn less_equal(&self, other: &Self) -> bool {
        other
            .0
            .iter()
            .all(|b| self.0.iter().any(|a| a.less_equal(b)))
    }
    /// The intersection of the two sets: minimal pairwise joins.
    fn join(&self, other: &Self) -> Self {
        Antichain::new(
            self.0
                .iter()
                .flat_map(|a| other.0.iter().map(move |b| a.join(b))),
        )
    }
    /// The union of the two sets: minimal elements of both.
    fn meet(&self, other: &Self) -> Self {
        Antichain::new(self.0.iter().chain(&other.0).copied())
    }
}

impl Payload for Antichain {
    fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new(b"antichain/1");
        w.u64(self.0.len() as u64);
        for p in &self.0 {
            w.u64(p.0).u64(p.1);
        }
        w.finish()
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = FieldReader::new(bytes, b"antichain/1")?;
        let n = r.u64()?;
        let mut elements = Vec::new();
        for _ in 0..n.min(1 << 16) {
            elements.push(Product(r.u64()?, r.u64()?));
        }
        r.finish()?;
        Ok(Antichain::new(elements))
    }
}

/// Shorthand: `chain(&[(1, 2), (3, 0)])`.
pub fn chain(elements: &[(u64, u64)]) -> Antichain {
    Antichain::new(elements.iter().map(|&(a, b)| Product(a, b)))
}
