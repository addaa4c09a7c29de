//! HPACK (RFC 7541): the decoder of request header blocks, with the
//! static and the dynamic table, and the encoder of response header
//! blocks, which uses the static table alone (it never indexes, so it
//! keeps no state and needs no table size update: the literal forms are
//! valid under any table size the client sets).

use std::collections::VecDeque;

use super::huffman;

/// RFC 7541 Appendix A.
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// What an entry costs in the dynamic table besides its bytes (§4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The table size this decoder starts at and the most a client may set
/// (our SETTINGS_HEADER_TABLE_SIZE: the protocol's default).
pub const TABLE_SIZE: usize = 4096;

/// Why a header block cannot be decoded: every one is a connection
/// error of type COMPRESSION_ERROR (RFC 9113 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer does not fit")]
    IntegerOverflow,
    #[error("index {0} is in neither table")]
    BadIndex(usize),
    #[error("index 0")]
    ZeroIndex,
    #[error("string is not valid Huffman code")]
    BadHuffman,
    #[error("dynamic table size update to {0}, above {TABLE_SIZE}")]
    TableTooLarge(usize),
    #[error("dynamic table size update after the first field")]
    LateSizeUpdate,
}

/// One decoded field: name, value, and whether it was sent never-indexed
/// (it must stay so if passed on, §7.1.3).
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub sensitive: bool,
}

struct Entry {
    name: Box<[u8]>,
    value: Box<[u8]>,
}

impl Entry {
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

/// A connection's request-side decoder: its dynamic table lives as long
/// as the connection.
pub struct Decoder {
    /// Newest first.
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// Scratch for Huffman-coded names and values.
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: TABLE_SIZE,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }
}

impl Decoder {
    /// Decodes the whole `block`, handing each field to `emit` in order.
    /// The block is always decoded to its end (the table must stay in
    /// step with the client's), so a caller over its header-list limit
    /// counts and drops fields in `emit` rather than stopping.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut emit: impl FnMut(Field<'_>),
    ) -> Result<(), HpackError> {
        let mut at = 0;
        let mut fields = 0usize;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = integer(block, &mut at, 7)?;
                let (name, value) = lookup(&self.entries, index)?;
                emit(Field {
                    name,
                    value,
                    sensitive: false,
                });
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before the first
                // field.
                if fields > 0 {
                    return Err(HpackError::LateSizeUpdate);
                }
                let size = integer(block, &mut at, 5)?;
                if size > TABLE_SIZE {
                    return Err(HpackError::TableTooLarge(size));
                }
                self.max_size = size;
                self.evict_to(size);
                continue;
            } else {
                // Literal (§6.2): with incremental indexing (01), without
                // (0000) or never indexed (0001).
                let (prefix, indexing, sensitive) = match first & 0xf0 {
                    0x00 => (4, false, false),
                    0x10 => (4, false, true),
                    _ => (6, true, false),
                };
                let index = integer(block, &mut at, prefix)?;
                if index == 0 {
                    string(block, &mut at, &mut self.name_buf)?;
                }
                string(block, &mut at, &mut self.value_buf)?;
                let name: &[u8] = match index {
                    0 => &self.name_buf,
                    _ => lookup(&self.entries, index)?.0,
                };
                let value: &[u8] = &self.value_buf;
                let entry = indexing.then(|| Entry {
                    name: name.into(),
                    value: value.into(),
                });
                emit(Field {
                    name,
                    value,
                    sensitive,
                });
                if let Some(entry) = entry {
                    self.insert(entry);
                }
            }
            fields += 1;
        }
        Ok(())
    }

    /// The size the client last set for the dynamic table.
    pub fn table_size(&self) -> usize {
        self.max_size
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        // An entry larger than the table empties it and is not added
        // (§4.4).
        self.evict_to(self.max_size.saturating_sub(size));
        if size <= self.max_size {
            self.size += size;
            self.entries.push_front(entry);
        }
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some(old) => self.size -= old.size(),
                None => break,
            }
        }
    }
}

/// The field at `index` of the static table, then the dynamic one (§2.3.3).
fn lookup(entries: &VecDeque<Entry>, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
    match index {
        0 => Err(HpackError::ZeroIndex),
        1..=61 => Ok(STATIC[index - 1]),
        _ => entries
            .get(index - 62)
            .map(|e| (&*e.name, &*e.value))
            .ok_or(HpackError::BadIndex(index)),
    }
}

/// Reads an integer with an `prefix`-bit prefix at `block[*at]` (§5.1).
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let mask = (1u16 << prefix) as usize - 1;
    let first = *block.get(*at).ok_or(HpackError::Truncated)? as usize & mask;
    *at += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0u32;
    loop {
        let byte = *block.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        // 2^28 is far past any length or index a block of ours can hold,
        // and keeps the sum well inside usize.
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        value += ((byte & 0x7f) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Reads a string literal (§5.2) into `out` (replacing what it held).
fn string(block: &[u8], at: &mut usize, out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = *block.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let end = at.checked_add(len).ok_or(HpackError::Truncated)?;
    let bytes = block.get(*at..end).ok_or(HpackError::Truncated)?;
    *at = end;
    out.clear();
    if huffman {
        huffman::decode(bytes, out).map_err(|_| HpackError::BadHuffman)
    } else {
        out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Appends an integer with a `prefix`-bit prefix whose first byte carries
/// `flags` in its high bits.
#[inline]
fn put_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(flags | value as u8);
    } else {
        put_long_integer(out, flags | mask as u8, value - mask);
    }
}

fn put_long_integer(out: &mut Vec<u8>, first: u8, mut rest: usize) {
    out.push(first);
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[inline]
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    put_integer(out, 0, 7, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends `:status` (indexed when the static table has it).
pub fn encode_status(out: &mut Vec<u8>, status: u16) {
    let index = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => {
            // Literal without indexing, name :status (index 8).
            out.push(0x08);
            let mut digits = itoa::Buffer::new();
            put_string(out, digits.format(status).as_bytes());
            return;
        }
    };
    out.push(0x80 | index);
}

/// Appends a field as a literal without indexing (never indexed when
/// `sensitive`), its name from the static table where it is there.
/// `name` must be lower case, as HTTP/2 requires.
pub fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
    // Room for the whole field at once: lengths take a few bytes each.
    out.reserve(name.len() + value.len() + 8);
    let flags = if sensitive { 0x10 } else { 0x00 };
    match static_name(name) {
        Some(index) => put_integer(out, flags, 4, index),
        None => {
            out.push(flags);
            put_string(out, name);
        }
    }
    put_string(out, value);
}

/// The static table's index of `name`, for the names responses carry.
fn static_name(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::wire::h2::tests::hex;

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut out = Vec::new();
        d.decode(block, |f| {
            out.push((
                String::from_utf8(f.name.to_vec()).unwrap(),
                String::from_utf8(f.value.to_vec()).unwrap(),
            ))
        })?;
        Ok(out)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The third request of RFC 7541 C.3 and C.4.
    const THIRD_REQUEST: [(&str, &str); 5] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];

    #[test]
    fn decodes_rfc_7541_c3_requests_without_huffman() {
        let mut d = Decoder::default();
        let first = decode(
            &mut d,
            &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
        );
        assert_eq!(
            first.unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.size, 57);
        let second = decode(&mut d, &hex("8286 84be 5808 6e6f 2d63 6163 6865"));
        assert_eq!(
            second.unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        assert_eq!(d.size, 110);
        let third = decode(
            &mut d,
            &hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"),
        );
        assert_eq!(third.unwrap(), pairs(&THIRD_REQUEST));
        assert_eq!(d.size, 164);
        assert_eq!(d.entries.len(), 3);
    }

    #[test]
    fn decodes_rfc_7541_c4_requests_with_huffman() {
        let mut d = Decoder::default();
        decode(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        decode(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        let third = decode(
            &mut d,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        );
        assert_eq!(third.unwrap(), pairs(&THIRD_REQUEST));
        assert_eq!(d.size, 164);
    }

    #[test]
    fn evicts_the_oldest_entries_rfc_7541_c5() {
        // C.5 responses, decoded with a 256-byte table (set by an update).
        let mut d = Decoder::default();
        let mut first = hex("3fe1 01");
        first.extend(hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
             6c65 2e63 6f6d",
        ));
        decode(&mut d, &first).unwrap();
        assert_eq!(d.size, 222);
        let second = decode(&mut d, &hex("4803 3330 37c1 c0bf")).unwrap();
        assert_eq!(second[0], (":status".into(), "307".into()));
        assert_eq!(second[1], ("cache-control".into(), "private".into()));
        assert_eq!(d.size, 222);
        assert_eq!(&*d.entries[0].value, b"307");
        assert_eq!(d.entries.len(), 4);
    }

    #[test]
    fn refuses_what_rfc_7541_calls_errors() {
        let mut d = Decoder::default();
        assert_eq!(decode(&mut d, &hex("be")), Err(HpackError::BadIndex(62)));
        assert_eq!(decode(&mut d, &hex("80")), Err(HpackError::ZeroIndex));
        // A size update to 8192, above our SETTINGS_HEADER_TABLE_SIZE.
        assert_eq!(
            decode(&mut d, &hex("3fe1 3f")),
            Err(HpackError::TableTooLarge(8192))
        );
        assert_eq!(
            decode(&mut d, &hex("82 20")),
            Err(HpackError::LateSizeUpdate)
        );
        assert_eq!(decode(&mut d, &hex("41 8f")), Err(HpackError::Truncated));
        assert_eq!(
            decode(&mut d, &hex("ff ff ff ff ff ff 01")),
            Err(HpackError::IntegerOverflow)
        );
        assert_eq!(
            decode(&mut d, &hex("41 81 00")),
            Err(HpackError::BadHuffman)
        );
    }

    #[test]
    fn an_entry_larger_than_the_table_empties_it() {
        let mut d = Decoder::default();
        decode(
            &mut d,
            &hex("400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"),
        )
        .unwrap();
        assert_eq!(d.entries.len(), 1);
        let mut big = vec![0x40, 0x01, b'x', 0x7f];
        put_integer_tail(&mut big, 5000 - 127);
        big.extend(std::iter::repeat_n(b'y', 5000));
        decode(&mut d, &big).unwrap();
        assert_eq!(d.entries.len(), 0);
        assert_eq!(d.size, 0);
    }

    fn put_integer_tail(out: &mut Vec<u8>, mut rest: usize) {
        while rest >= 0x80 {
            out.push((rest as u8 & 0x7f) | 0x80);
            rest >>= 7;
        }
        out.push(rest as u8);
    }

    #[test]
    fn encoded_responses_decode_to_what_went_in() {
        let mut block = Vec::new();
        encode_status(&mut block, 200);
        encode_status(&mut block, 503);
        encode_field(&mut block, b"content-type", b"text/plain", false);
        encode_field(&mut block, b"x-request-id", b"abc", true);
        encode_field(&mut block, b"x-long", &[b'v'; 300], false);
        let mut d = Decoder::default();
        let mut sensitive = Vec::new();
        let mut got = Vec::new();
        d.decode(&block, |f| {
            sensitive.push(f.sensitive);
            got.push((f.name.to_vec(), f.value.to_vec()));
        })
        .unwrap();
        assert_eq!(got[0], (b":status".to_vec(), b"200".to_vec()));
        assert_eq!(got[1], (b":status".to_vec(), b"503".to_vec()));
        assert_eq!(got[2], (b"content-type".to_vec(), b"text/plain".to_vec()));
        assert_eq!(got[3], (b"x-request-id".to_vec(), b"abc".to_vec()));
        assert_eq!(got[4].1.len(), 300);
        assert_eq!(sensitive, [false, false, false, true, false]);
        assert!(d.entries.is_empty(), "the encoder never indexes");
    }
}
