//! Indexers: terms a record is found under, kept in the same transaction as the record.
//!
//! An [`Indexer`] maps a record's archived value to terms (bytes). Each term is stored as
//! an entry `F1 05 <tree> 00 <index> 00 <term> 00 01 <id> <revision>` (NUL bytes inside
//! the index name and the term written `00 FF`, so the end of a term never looks like the
//! middle of a longer one), written and removed in the transaction that
//! writes the record, so a lookup never sees a term without its record or the reverse.
//! [`Tree::find`] looks a term up exactly, [`Tree::find_prefix`] by its start, and
//! [`Tree::rebuild_index`] writes an index again from the tree (after adding an indexer
//! to a tree with records, or after writes through a handle that lacked it).

use crate::{layout, Key, Record};

#[cfg(doc)]
use crate::Tree;

/// Terms for the records of `T`.
pub trait Indexer<T: Record>: Send + Sync + 'static {
    /// The index's name, unique in its tree.
    fn name(&self) -> &str;

    /// The terms a record holding `value` is found under.
    fn terms(&self, value: &T::Archived) -> Vec<Vec<u8>>;
}

/// `bytes` with each NUL written `00 FF`, so that a following `00` ends it.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// The start of every entry of `index` in `tree`.
pub(crate) fn index_prefix(tree: &str, index: &str) -> Vec<u8> {
    let mut k = layout::index_base(tree);
    escaped(&mut k, index.as_bytes());
    k.push(0);
    k
}

/// The start of the entries of `index` whose term starts with `term`; with `whole`, of
/// those whose term is exactly `term`.
pub(crate) fn term_prefix(tree: &str, index: &str, term: &[u8], whole: bool) -> Vec<u8> {
    let mut k = index_prefix(tree, index);
    escaped(&mut k, term);
    if whole {
        k.extend_from_slice(&TERM_END);
    }
    k
}

/// What ends a term in an entry: `00 01`, where an escaped NUL inside it is `00 FF`.
const TERM_END: [u8; 2] = [0, 1];

/// The entry of `term` for record `key`.
pub(crate) fn entry<T: Record>(index: &str, term: &[u8], key: Key<T>) -> Vec<u8> {
    let mut k = term_prefix(T::TREE, index, term, true);
    debug_assert!(k.ends_with(&TERM_END));
    k.extend_from_slice(&key.id().to_be_bytes());
    k.extend_from_slice(&key.revision().to_be_bytes());
    k
}

/// The record an entry points at: its last twelve bytes.
pub(crate) fn entry_key<T: Record>(entry: &[u8]) -> Option<Key<T>> {
    let at = entry.len().checked_sub(12)?;
    let (id, revision) = entry[at..].split_at(8);
    Some(Key::new(
        u64::from_be_bytes(id.try_into().ok()?),
        u32::from_be_bytes(revision.try_into().ok()?),
    ))
}

/// A ready-made index of a name field: exact lookups, lookups that ignore case and spacing
/// (`"  M6  Bolt "` finds `"m6 bolt"`), and similar names (by the start of the whole name or
/// of any of its words). Register it with [`crate::Tree::with_indexer`], look up through its
/// own methods.
pub struct NameIndex<T: Record> {
    name: String,
    field: fn(&T::Archived) -> &str,
}

impl<T: Record> Clone for NameIndex<T> {
    fn clone(&self) -> Self {
        NameIndex {
            name: self.name.clone(),
            field: self.field,
        }
    }
}

const EXACT: u8 = b'=';
const LOOSE: u8 = b'~';
const WORD: u8 = b'w';

/// A name with case, surrounding space and runs of space folded away.
pub fn normalize(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn marked(mark: u8, text: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(text.len() + 1);
    t.push(mark);
    t.extend_from_slice(text.as_bytes());
    t
}

impl<T: Record> NameIndex<T> {
    /// An index named `name` over the name `field` reads from a record.
    pub fn new(name: &str, field: fn(&T::Archived) -> &str) -> Self {
        NameIndex {
            name: name.to_string(),
            field,
        }
    }

    /// The records whose name is exactly `name`.
    pub async fn exact(&self, tree: &crate::Tree<T>, name: &str) -> crate::Result<Vec<Key<T>>> {
        tree.find(&self.name, &marked(EXACT, name)).await
    }

    /// The records whose name is `name` once case and spacing are ignored.
    pub async fn loose(&self, tree: &crate::Tree<T>, name: &str) -> crate::Result<Vec<Key<T>>> {
        tree.find(&self.name, &marked(LOOSE, &normalize(name)))
            .await
    }

    /// The records whose name, or one of its words, starts with `query` (case and spacing
    /// ignored), each once, in key order.
    pub async fn similar(&self, tree: &crate::Tree<T>, query: &str) -> crate::Result<Vec<Key<T>>> {
        let query = normalize(query);
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = tree.find_prefix(&self.name, &marked(LOOSE, &query)).await?;
        found.extend(tree.find_prefix(&self.name, &marked(WORD, &query)).await?);
        found.sort();
        found.dedup();
        Ok(found)
    }
}

impl<T: Record> Indexer<T> for NameIndex<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn terms(&self, value: &T::Archived) -> Vec<Vec<u8>> {
        let name = (self.field)(value);
        let loose = normalize(name);
        let mut terms = vec![marked(EXACT, name), marked(LOOSE, &loose)];
        let mut words: Vec<&str> = loose.split(' ').filter(|w| !w.is_empty()).collect();
        words.sort_unstable();
        words.dedup();
        terms.extend(words.into_iter().map(|w| marked(WORD, w)));
        terms
    }
}
