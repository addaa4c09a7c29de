//! Finding the end of a chunked body (RFC 9112 §7.1) that is forwarded as
//! it came: the bytes are not decoded, only followed, so the client gets
//! the upstream's chunks, extensions and trailers unchanged. As strict as
//! hyper's decoder on what it checks: hex sizes that fit in 64 bits, CRLF
//! (not a bare LF) after each size line and each chunk, and no newline in
//! an extension — and, because what it follows reaches the client as it
//! came, stricter on the rest (RFC 9112 §7.1.1, §7.1.2): an extension holds
//! no control byte, and a trailer line is a field (`token ":" value`, the
//! value free of control bytes but tab).

/// Longest size line with its extensions, and longest trailer line: past
/// these the body is refused rather than followed forever.
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Reading the hex size; `digits` seen so far.
    Size {
        digits: u8,
    },
    /// Spaces or tabs after the size.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: a trailer line, or the final CRLF.
    LineStart,
    /// A trailer field's name, then its value.
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Follows one chunked body through the pieces it arrives in.
#[derive(Debug)]
pub struct ChunkedScan {
    state: State,
    /// Chunk bytes still to come, or the size being read.
    size: u64,
    line: usize,
}

impl Default for ChunkedScan {
    fn default() -> Self {
        ChunkedScan {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
        }
    }
}

impl ChunkedScan {
    /// Follows `data`, the next bytes from the upstream; returns how many
    /// belong to the body (all of them, unless the body ends inside).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, &'static str> {
        let mut at = 0;
        while at < data.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - at);
                at += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(data[at])?;
            at += 1;
        }
        Ok(at)
    }

    /// Decodes instead of following: takes the framing from the front of
    /// `buf` and returns the next piece of chunk data, or `None` when
    /// `buf` holds no more (or the body ended: see [`done`](Self::done)).
    /// Trailers are read and dropped.
    pub fn next_data(
        &mut self,
        buf: &mut bytes::BytesMut,
    ) -> Result<Option<bytes::Bytes>, &'static str> {
        while !buf.is_empty() && self.state != State::Done {
            if self.state == State::Data {
                let take = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Some(buf.split_to(take).freeze()));
            }
            self.step(buf[0])?;
            bytes::Buf::advance(buf, 1);
        }
        Ok(None)
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    fn step(&mut self, b: u8) -> Result<(), &'static str> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err("chunk size line or trailer too long");
        }
        self.state = match (self.state, b) {
            (State::Size { digits }, _) if b.is_ascii_hexdigit() => {
                if digits >= 16 {
                    return Err("chunk size does not fit in 64 bits");
                }
                let value = (b as char).to_digit(16).unwrap_or(0);
                self.size = self.size << 4 | u64::from(value);
                State::Size { digits: digits + 1 }
            }
            (State::Size { digits: 0 }, _) => return Err("chunk size missing"),
            (State::Size { .. } | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
            (State::Size { .. } | State::SizeSpace | State::Extension, b';') => State::Extension,
            (State::Size { .. } | State::SizeSpace | State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b'\n') => return Err("newline in a chunk extension"),
            (State::Extension, _) if field_byte(b) => State::Extension,
            (State::Extension, _) => return Err("control byte in a chunk extension"),
            (State::SizeLf, b'\n') => {
                self.line = 0;
                if self.size == 0 {
                    State::LineStart
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => {
                self.line = 0;
                State::Size { digits: 0 }
            }
            (State::LineStart, b'\r') => State::EndLf,
            (State::LineStart | State::TrailerValue, b'\n') => return Err("bare LF in trailers"),
            (State::LineStart | State::TrailerName, _) if is_tchar(b) => State::TrailerName,
            (State::TrailerName, b':') => State::TrailerValue,
            (State::LineStart | State::TrailerName, _) => {
                return Err("a trailer line that is not a header field");
            }
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerValue, _) if field_byte(b) => State::TrailerValue,
            (State::TrailerValue, _) => return Err("control byte in a trailer field"),
            (State::TrailerLf, b'\n') => {
                self.line = 0;
                State::LineStart
            }
            (State::EndLf, b'\n') => State::Done,
            _ => return Err("malformed chunked body"),
        };
        Ok(())
    }
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte a field value or extension may hold: visible, space, tab, or
/// obs-text (RFC 9110 §5.5) — no other control byte.
fn field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scans `body` in pieces of `step` bytes; the bytes taken and whether
    /// it ended, or the error.
    fn scan_in(body: &[u8], step: usize) -> Result<(usize, bool), &'static str> {
        let mut scan = ChunkedScan::default();
        let mut taken = 0;
        for piece in body.chunks(step.max(1)) {
            taken += scan.scan(piece)?;
            if scan.done() {
                break;
            }
        }
        Ok((taken, scan.done()))
    }

    #[test]
    fn well_formed_bodies_end_where_they_end() {
        let body = b"5;ext=1\r\nhello\r\nA \r\n0123456789\r\n1;q=\"a b\"\r\nx\r\n0\r\nx-t: 1\tz\r\nx-u:\r\n\r\nNEXT";
        for step in 1..body.len() {
            assert_eq!(
                scan_in(body, step),
                Ok((body.len() - 4, true)),
                "step {step}"
            );
        }
        assert_eq!(scan_in(b"0\r\n\r\n", 2), Ok((5, true)));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"1;a\nb\r\n",
            b"11111111111111111\r\n",
            b"0\r\nx-t: 1\n\r\n",
            b"1;a=\x01\r\nx\r\n0\r\n\r\n",
            b"1;a\x7f\r\nx\r\n0\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nx-t: a\x00b\r\n\r\n",
        ] {
            assert!(
                scan_in(body, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    proptest! {
        #[test]
        fn any_chunking_of_any_body_is_followed_to_its_end(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
            step in 1usize..64,
        ) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let end = body.len();
            body.extend_from_slice(b"GET / HTTP/1.1\r\n");
            prop_assert_eq!(scan_in(&body, step), Ok((end, true)));
        }

        #[test]
        fn decoding_any_chunking_gives_the_body_back(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
            step in 1usize..64,
        ) {
            let mut encoded = Vec::new();
            for c in &chunks {
                encoded.extend_from_slice(format!("{:x};x=y\r\n", c.len()).as_bytes());
                encoded.extend_from_slice(c);
                encoded.extend_from_slice(b"\r\n");
            }
            encoded.extend_from_slice(b"0\r\nx-t: 1\r\n\r\n");
            let mut scan = ChunkedScan::default();
            let mut buf = bytes::BytesMut::new();
            let mut body = Vec::new();
            for piece in encoded.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(data) = scan.next_data(&mut buf).unwrap() {
                    body.extend_from_slice(&data);
                }
            }
            prop_assert!(scan.done() && buf.is_empty());
            prop_assert_eq!(body, chunks.concat());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = scan_in(&bytes, 7);
        }
    }
}
