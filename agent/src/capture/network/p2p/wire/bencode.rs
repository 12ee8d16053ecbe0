//! A small bencode reader (BEP 3) for KRPC: byte strings, integers, lists
//! and dictionaries, borrowing from the input, with a depth limit. A
//! payload cut short by the inspection filter is reported as
//! [`Error::Truncated`], distinct from malformed input, so the caller can
//! still accept a valid prefix.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Int(i64),
    List(Vec<Value<'a>>),
    /// Keys in input order (bencode requires them sorted; not checked).
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The input ended inside a value.
    Truncated,
    /// Not bencode (or nested deeper than the limit).
    Malformed,
}

const MAX_DEPTH: usize = 16;

impl<'a> Value<'a> {
    /// The value of `key` in a dictionary.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// Parses one value at the start of `data`; returns it and the bytes used.
pub fn parse(data: &[u8]) -> Result<(Value<'_>, usize), Error> {
    let mut r = Reader { data, pos: 0 };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

/// Parses a dictionary at the start of `data` as far as it goes: the
/// complete entries before the point where the input ends. `Err` when the
/// bytes present are not bencode.
pub fn dict_prefix(data: &[u8]) -> Result<Vec<(&[u8], Value<'_>)>, Error> {
    let mut r = Reader { data, pos: 0 };
    if r.next()? != b'd' {
        return Err(Error::Malformed);
    }
    let mut items = Vec::new();
    loop {
        match r.entry(0) {
            Ok(Some(kv)) => items.push(kv),
            Ok(None) => return Ok(items),
            Err(Error::Truncated) => return Ok(items),
            Err(e) => return Err(e),
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<u8, Error> {
        let b = *self.data.get(self.pos).ok_or(Error::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&self) -> Result<u8, Error> {
        self.data.get(self.pos).copied().ok_or(Error::Truncated)
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::Malformed);
        }
        match self.peek()? {
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'i' => {
                self.pos += 1;
                let n = self.number(b'e')?;
                Ok(Value::Int(n))
            }
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut items = Vec::new();
                while let Some(kv) = self.entry(depth)? {
                    items.push(kv);
                }
                Ok(Value::Dict(items))
            }
            _ => Err(Error::Malformed),
        }
    }

    /// One dictionary entry, or None at the dictionary's `e`.
    fn entry(&mut self, depth: usize) -> Result<Option<(&'a [u8], Value<'a>)>, Error> {
        match self.peek()? {
            b'e' => {
                self.pos += 1;
                Ok(None)
            }
            b'0'..=b'9' => {
                let k = self.bytes()?;
                let v = self.value(depth + 1)?;
                Ok(Some((k, v)))
            }
            _ => Err(Error::Malformed),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let len = self.number(b':')?;
        let len = usize::try_from(len).map_err(|_| Error::Malformed)?;
        let end = self.pos.checked_add(len).ok_or(Error::Malformed)?;
        let s = self.data.get(self.pos..end).ok_or(Error::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// A decimal number ended by `end` (no leading zeros, "-0" refused).
    fn number(&mut self, end: u8) -> Result<i64, Error> {
        let start = self.pos;
        let mut n: i64 = 0;
        let neg = end == b'e' && self.peek()? == b'-';
        if neg {
            self.pos += 1;
        }
        loop {
            let b = self.next()?;
            if b == end {
                break;
            }
            let d = match b {
                b'0'..=b'9' => i64::from(b - b'0'),
                _ => return Err(Error::Malformed),
            };
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(d))
                .ok_or(Error::Malformed)?;
        }
        let digits = &self.data[start + usize::from(neg)..self.pos - 1];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') || (neg && n == 0) {
            return Err(Error::Malformed);
        }
        Ok(if neg { -n } else { n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let (v, used) = parse(b"d1:ad2:id2:abe1:lli1ei-2ee1:y1:qetrailing").expect("test data");
        assert_eq!(used, 33);
        assert_eq!(v.get(b"y").and_then(Value::bytes), Some(&b"q"[..]));
        assert_eq!(
            v.get(b"a")
                .and_then(|a| a.get(b"id"))
                .and_then(Value::bytes),
            Some(&b"ab"[..])
        );
        assert_eq!(
            v.get(b"l"),
            Some(&Value::List(vec![Value::Int(1), Value::Int(-2)]))
        );
    }

    #[test]
    fn errors() {
        for (input, want) in [
            (&b"d1:a"[..], Error::Truncated),
            (b"5:abc", Error::Truncated),
            (b"i12", Error::Truncated),
            (b"x", Error::Malformed),
            (b"i01e", Error::Malformed),
            (b"i-0e", Error::Malformed),
            (b"ie", Error::Malformed),
            (b"d1:ai1e2:bb", Error::Truncated),
            (b"d1:ai1e2:bbe", Error::Malformed),
            (b"di1ei2ee", Error::Malformed),
            (b"99999999999999999999:a", Error::Malformed),
            (b"-1:a", Error::Malformed),
        ] {
            assert_eq!(parse(input).err(), Some(want), "{input:?}");
        }
        let deep = "l".repeat(40);
        assert_eq!(parse(deep.as_bytes()).err(), Some(Error::Malformed));
    }

    #[test]
    fn prefix_of_a_cut_dictionary() {
        let items =
            dict_prefix(b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def").expect("test data");
        assert!(items.is_empty(), "the first entry is not complete");
        let items = dict_prefix(b"d1:ad2:id1:xe1:q4:ping1:t2:").expect("test data");
        assert_eq!(items.len(), 2);
        assert_eq!(dict_prefix(b"l1:ae").err(), Some(Error::Malformed));
        assert_eq!(dict_prefix(b"d1:a!").err(), Some(Error::Malformed));
    }
}
