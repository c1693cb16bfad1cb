//! Keys: `(id, revision)` typed by their tree, and the untyped form that travels.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use crate::{Error, Record};

/// One revision of one record of tree `T`.
///
/// The tree is part of the type, so a key of one tree used with another does not compile:
///
/// ```compile_fail,E0308
/// use strata_typed::{record, Key, Tree};
///
/// #[record(tree = "parts", version = 1)]
/// pub struct Part {
///     pub name: String,
/// }
///
/// #[record(tree = "stock", version = 1)]
/// pub struct Stock {
///     pub count: u32,
/// }
///
/// async fn read(parts: Tree<Part>, key: Key<Stock>) {
///     let _ = parts.get(key).await;
/// }
/// ```
///
/// while the same code with the tree's own key does:
///
/// ```no_run
/// use strata_typed::{record, Key, Tree};
///
/// #[record(tree = "parts", version = 1)]
/// pub struct Part {
///     pub name: String,
/// }
///
/// async fn read(parts: Tree<Part>, key: Key<Part>) {
///     let _ = parts.get(key).await;
/// }
/// ```
///
/// A key that has lost its type ([`RawKey`]) is checked against the tree's name when it is
/// made typed again ([`Error::WrongTree`]).
pub struct Key<T> {
    id: u64,
    revision: u32,
    tree: PhantomData<fn() -> T>,
}

impl<T: Record> Key<T> {
    pub fn new(id: u64, revision: u32) -> Self {
        Key {
            id,
            revision,
            tree: PhantomData,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn revision(&self) -> u32 {
        self.revision
    }

    /// The key without its type, naming its tree.
    pub fn raw(&self) -> RawKey {
        RawKey {
            tree: T::TREE.to_string(),
            id: self.id,
            revision: self.revision,
        }
    }
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Key<T> {}

impl<T> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.id, self.revision) == (other.id, other.revision)
    }
}

impl<T> Eq for Key<T> {}

impl<T> PartialOrd for Key<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Key<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.id, self.revision).cmp(&(other.id, other.revision))
    }
}

impl<T> std::hash::Hash for Key<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.id, self.revision).hash(state)
    }
}

impl<T: Record> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.raw())
    }
}

impl<T: Record> fmt::Display for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw().fmt(f)
    }
}

/// A key with its tree's name instead of its type: what a generic viewer, a log line or the
/// wire carries. Written `tree/id@revision`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawKey {
    pub tree: String,
    pub id: u64,
    pub revision: u32,
}

impl fmt::Display for RawKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.tree, self.id, self.revision)
    }
}

impl FromStr for RawKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a key: expected tree/id@revision");
        let (tree, rest) = s.rsplit_once('/').ok_or_else(bad)?;
        let (id, revision) = rest.split_once('@').ok_or_else(bad)?;
        if tree.is_empty() || tree.contains('\0') {
            return Err(bad());
        }
        Ok(RawKey {
            tree: tree.to_string(),
            id: id.parse().map_err(|_| bad())?,
            revision: revision.parse().map_err(|_| bad())?,
        })
    }
}

impl<T: Record> TryFrom<&RawKey> for Key<T> {
    type Error = Error;

    /// The typed key, if `raw` names `T`'s tree.
    fn try_from(raw: &RawKey) -> Result<Self, Error> {
        if raw.tree != T::TREE {
            return Err(Error::WrongTree {
                key: raw.clone(),
                expected: T::TREE,
            });
        }
        Ok(Key::new(raw.id, raw.revision))
    }
}
