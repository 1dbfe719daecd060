//! Many short strings kept in one allocation: the console's names and
//! prefixes, a service's environment. A `Vec<String>` costs 24 bytes and a
//! heap block (32 bytes at least, with malloc's header) per string, for
//! every service, for as long as corral runs; here a string costs its bytes
//! and a 4-byte end offset.

/// An immutable list of strings, in the order they were given.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Strings {
    text: Box<str>,
    /// Where each string ends in `text`. u32: what corral keeps per service
    /// (names, prefixes, an environment) is far under 4 GiB.
    ends: Box<[u32]>,
}

impl Strings {
    pub fn get(&self, i: usize) -> Option<&str> {
        let start = match i.checked_sub(1) {
            Some(prev) => *self.ends.get(prev)?,
            None => 0,
        };
        let end = *self.ends.get(i)?;
        self.text.get(start as usize..end as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| self.text.get(a as usize..b as usize).unwrap_or(""))
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

/// Builds a `Strings` one string at a time.
#[derive(Default)]
pub struct Builder {
    text: String,
    ends: Vec<u32>,
}

impl Builder {
    /// Adds one string, made of these pieces joined (`["KEY", "=", "value"]`).
    pub fn push(&mut self, pieces: &[&str]) {
        for piece in pieces {
            self.text.push_str(piece);
        }
        self.ends
            .push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
    }

    pub fn finish(self) -> Strings {
        Strings {
            text: self.text.into_boxed_str(),
            ends: self.ends.into_boxed_slice(),
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for Strings {
    fn from_iter<I: IntoIterator<Item = S>>(strings: I) -> Strings {
        let mut list = Builder::default();
        for s in strings {
            list.push(&[s.as_ref()]);
        }
        list.finish()
    }
}

impl std::fmt::Debug for Strings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_comes_back_in_order() {
        let list: Strings = ["web", "", "a longer name", "é"].into_iter().collect();
        assert_eq!(list.len(), 4);
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            ["web", "", "a longer name", "é"]
        );
        assert_eq!(list.get(0), Some("web"));
        assert_eq!(list.get(1), Some(""));
        assert_eq!(list.get(3), Some("é"));
        assert_eq!(list.get(4), None);
        let mut joined = Builder::default();
        joined.push(&["A", "=", "1"]);
        joined.push(&["B", "=", ""]);
        assert_eq!(joined.finish().iter().collect::<Vec<_>>(), ["A=1", "B="]);
        assert_eq!(Strings::default().len(), 0);
        assert_eq!(Strings::default().get(0), None);
    }
}
