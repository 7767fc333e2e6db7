//! A bounded map that forgets what has not been used lately, a generation
//! at a time: entries live in the current generation or the previous one;
//! when the current one is full it becomes the previous one, and the old
//! previous one is dropped. An entry used (`get`) in the previous
//! generation moves back to the current one. So the cache never holds more
//! than `capacity` entries and is never emptied at once under load: what a
//! busy proxy keeps using survives every turn.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub struct Generations<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    /// Entries per generation (half the capacity).
    per_generation: usize,
}

impl<K: Hash + Eq, V: Clone> Generations<K, V> {
    pub fn new(capacity: usize) -> Generations<K, V> {
        Generations { current: HashMap::new(), previous: HashMap::new(), per_generation: (capacity / 2).max(1) }
    }

    /// The value of `key`, kept for another generation.
    pub fn get(&mut self, key: &K) -> Option<V> {
        if let Some(v) = self.current.get(key) {
            return Some(v.clone());
        }
        let (key, value) = self.previous.remove_entry(key)?;
        self.insert(key, value.clone());
        Some(value)
    }

    /// The value of `key`, without moving it (for readers that hold a
    /// shared lock): an entry only peeked at is dropped two turns on.
    pub fn peek<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Insert; `true` when the key was in neither generation.
    pub fn insert(&mut self, key: K, value: V) -> bool {
        let was_old = self.previous.remove(&key).is_some();
        if !self.current.contains_key(&key) && self.current.len() >= self.per_generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value).is_none() && !was_old
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.current.remove(key).or_else(|| self.previous.remove(key))
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq, V: Clone> Default for Generations<K, V> {
    fn default() -> Self {
        Generations::new(100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_its_capacity_and_never_emptied_at_once() {
        let mut c = Generations::new(10);
        for i in 0..1000 {
            c.insert(i, i);
            assert!(c.len() <= 10, "{} entries after {i}", c.len());
            assert!(c.len() >= 5.min(i + 1), "emptied after inserting {i}");
        }
    }

    #[test]
    fn entries_in_use_survive_every_turn() {
        let mut c = Generations::new(10);
        c.insert("hot", 1);
        for i in 0..1000 {
            c.insert(format!("cold {i}").leak() as &str, i);
            assert_eq!(c.get(&"hot"), Some(1), "the entry in use was dropped after {i} inserts");
        }
        assert_eq!(c.get(&"cold 0"), None, "an entry nobody uses goes");
    }

    #[test]
    fn insert_says_whether_the_key_was_new() {
        let mut c = Generations::new(4);
        assert!(c.insert(1, 'a'));
        assert!(!c.insert(1, 'b'));
        c.insert(2, 'c');
        c.insert(3, 'd'); // 1 and 2 are now the previous generation
        assert!(!c.insert(1, 'e'), "a key of the previous generation is not new");
        assert_eq!(c.peek(&1), Some(&'e'));
        assert_eq!(c.remove(&1), Some('e'));
        assert_eq!(c.peek(&1), None);
    }
}
