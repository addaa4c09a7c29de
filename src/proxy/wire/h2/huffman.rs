//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B): the table, a
//! decoder that walks it four bits at a time, and an encoder.
//!
//! The decoder's state machine is built from the code table on first
//! use, so the table below is the only copy of the code.

use std::sync::OnceLock;

/// Code of each byte value, right-aligned (RFC 7541 Appendix B).
const CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

/// Length in bits of each byte value's code.
const LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// EOS (symbol 256): 30 one bits. Only its prefix may pad a string.
const EOS_LENGTH: u8 = 30;

/// A string whose bits are no valid Huffman code: it holds EOS, or is
/// padded with more than seven bits or with a zero bit (RFC 7541 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHuffman;

/// One step of the decoder: from a tree node, four more bits.
#[derive(Clone, Copy, Default)]
struct Step {
    /// The node reached (0 is the root).
    next: u8,
    /// The byte a completed code stands for, if one completed.
    symbol: u8,
    emits: bool,
    /// The bits spelled EOS.
    fails: bool,
}

struct Machine {
    steps: Vec<[Step; 16]>,
    /// Nodes where a string may end: the root, or up to seven one bits
    /// into EOS's code past the last whole code.
    accepts: Vec<bool>,
}

/// A branch's child: another branch, or (high bit set) a symbol.
const LEAF: u16 = 0x8000;

fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Machine> = OnceLock::new();
    MACHINE.get_or_init(build_machine)
}

fn build_machine() -> Machine {
    // The code tree: 257 leaves, so 256 branches, indexed from the root.
    let mut branches: Vec<[u16; 2]> = vec![[0, 0]];
    let codes = CODES
        .iter()
        .zip(LENGTHS)
        .map(|(&code, len)| (code, len))
        .chain(std::iter::once((u32::MAX >> 2, EOS_LENGTH)));
    for (symbol, (code, len)) in codes.enumerate() {
        let mut node = 0usize;
        for depth in (0..len).rev() {
            let bit = ((code >> depth) & 1) as usize;
            if depth == 0 {
                branches[node][bit] = LEAF | symbol as u16;
            } else {
                if branches[node][bit] == 0 {
                    branches.push([0, 0]);
                    branches[node][bit] = (branches.len() - 1) as u16;
                }
                node = branches[node][bit] as usize;
            }
        }
    }
    let steps = (0..branches.len())
        .map(|from| {
            let mut row = [Step::default(); 16];
            for (nibble, step) in row.iter_mut().enumerate() {
                let mut node = from;
                for shift in (0..4).rev() {
                    let child = branches[node][(nibble >> shift) & 1];
                    if child & LEAF == 0 {
                        node = child as usize;
                        continue;
                    }
                    let symbol = child & !LEAF;
                    if symbol == 256 {
                        step.fails = true;
                    } else {
                        // No code is shorter than five bits, so four bits
                        // complete at most one.
                        step.symbol = symbol as u8;
                        step.emits = true;
                    }
                    node = 0;
                }
                step.next = node as u8;
            }
            row
        })
        .collect();
    let mut accepts = vec![false; branches.len()];
    let mut node = 0usize;
    accepts[0] = true;
    for _ in 0..7 {
        node = branches[node][1] as usize;
        accepts[node] = true;
    }
    Machine { steps, accepts }
}

/// Appends the Huffman-coded `src`, decoded, to `out`.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), BadHuffman> {
    let machine = machine();
    out.reserve(src.len() + src.len() / 2);
    let mut node = 0u8;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = machine.steps[node as usize][nibble as usize];
            if step.fails {
                return Err(BadHuffman);
            }
            if step.emits {
                out.push(step.symbol);
            }
            node = step.next;
        }
    }
    if machine.accepts[node as usize] {
        Ok(())
    } else {
        Err(BadHuffman)
    }
}

/// How many bytes `src` takes Huffman-coded.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| LENGTHS[b as usize] as usize).sum();
    bits.div_ceil(8)
}

/// Appends `src` Huffman-coded, padded with ones, to `out`.
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    let mut bits: u64 = 0;
    let mut held = 0u32;
    for &byte in src {
        let len = u32::from(LENGTHS[byte as usize]);
        bits = (bits << len) | u64::from(CODES[byte as usize]);
        held += len;
        while held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
        }
    }
    if held > 0 {
        let pad = 8 - held;
        out.push(((bits << pad) | ((1 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::wire::h2::tests::hex;

    #[test]
    fn decodes_rfc_7541_examples() {
        // RFC 7541 C.4.1 and C.6.1.
        for (coded, plain) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
        ] {
            let mut out = Vec::new();
            decode(&hex(coded), &mut out).unwrap();
            assert_eq!(out, plain.as_bytes());
            let mut again = Vec::new();
            encode(plain.as_bytes(), &mut again);
            assert_eq!(again, hex(coded));
            assert_eq!(encoded_len(plain.as_bytes()), again.len());
        }
    }

    #[test]
    fn refuses_bad_padding_and_eos() {
        let mut out = Vec::new();
        // 'a' is 00011 (5 bits): padded with zeros instead of ones.
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(BadHuffman));
        // A whole byte of padding (8 ones) after a complete code.
        assert_eq!(decode(&[0b0001_1111, 0xff], &mut out), Err(BadHuffman));
        // EOS itself: 30 ones, then padding.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff], &mut out), Err(BadHuffman));
        out.clear();
        assert_eq!(decode(&[0b0001_1111], &mut out), Ok(()));
        assert_eq!(out, b"a");
        assert_eq!(decode(&[], &mut out), Ok(()));
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut coded = Vec::new();
        encode(&all, &mut coded);
        let mut out = Vec::new();
        decode(&coded, &mut out).unwrap();
        assert_eq!(out, all);
    }
}
