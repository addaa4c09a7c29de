//! Where WebSocket frames end in a byte stream (RFC 6455 §5.2), so a
//! drain can end a tunnel with a close frame of its own between two of
//! the peers' frames, never inside one. Only the frame headers are read:
//! the length fields say how many payload bytes to pass over. Pure.

/// Follows one direction of a WebSocket connection.
#[derive(Debug, Default)]
pub struct FrameBoundaries {
    /// The current frame header's bytes so far (at most 14).
    head: [u8; 14],
    head_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
}

impl FrameBoundaries {
    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let need = header_len(&self.head[..self.head_len]);
            let n = (need - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
            self.head_len += n;
            bytes = &bytes[n..];
            if self.head_len == header_len(&self.head[..self.head_len]) {
                self.payload_left = payload_len(&self.head[..self.head_len]);
                self.head_len = 0;
            }
        }
    }

    /// How many bytes may be read without passing the end of the frame
    /// under way (its header's rest, then its payload); 0 between frames.
    pub fn bytes_to_boundary(&self) -> usize {
        if self.payload_left > 0 {
            return usize::try_from(self.payload_left).unwrap_or(usize::MAX);
        }
        if self.head_len == 0 {
            return 0;
        }
        header_len(&self.head[..self.head_len]) - self.head_len
    }

    /// Is the stream between two frames?
    pub fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0
    }
}

/// The length of a frame header that begins with `head`, as far as its
/// first two bytes tell (2 until they are known).
fn header_len(head: &[u8]) -> usize {
    let Some(&second) = head.get(1) else {
        return 2;
    };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length a complete frame header says.
fn payload_len(head: &[u8]) -> u64 {
    match head[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&head[2..10]);
            u64::from_be_bytes(len)
        }
        n => u64::from(n),
    }
}

/// A close frame with status 1001 ("going away"), as a server sends it to
/// a client: unmasked.
pub const GOING_AWAY_TO_CLIENT: [u8; 4] = [0x88, 0x02, 0x03, 0xe9];

/// The same close frame as a client sends it to a server: masked with
/// `mask` (RFC 6455 §5.3: a client masks every frame).
pub fn going_away_to_server(mask: [u8; 4]) -> [u8; 8] {
    let payload = [0x03 ^ mask[0], 0xe9 ^ mask[1]];
    [
        0x88, 0x82, mask[0], mask[1], mask[2], mask[3], payload[0], payload[1],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

    /// Frames encoded by tungstenite (the reference), cut anywhere: the
    /// boundaries found are exactly the frames' ends.
    fn encoded(frames: &[(usize, Option<[u8; 4]>)]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for (len, mask) in frames {
            let frame = Frame::from_payload(
                FrameHeader {
                    opcode: OpCode::Data(Data::Binary),
                    mask: *mask,
                    ..FrameHeader::default()
                },
                vec![0xab; *len].into(),
            );
            frame.format(&mut bytes).expect("encodes");
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    proptest! {
        #[test]
        fn boundaries_are_tungstenites_frame_ends(
            frames in proptest::collection::vec((0usize..70_000, proptest::option::of(any::<[u8; 4]>())), 1..6),
            cuts in proptest::collection::vec(1usize..5_000, 1..40),
        ) {
            let (bytes, ends) = encoded(&frames);
            let mut boundaries = FrameBoundaries::default();
            let (mut at, mut cut) = (0, 0);
            while at < bytes.len() {
                let step = cuts[cut % cuts.len()].min(bytes.len() - at);
                cut += 1;
                // Feed byte by byte around the ends, in chunks elsewhere.
                for chunk in bytes[at..at + step].chunks(if step < 20 { 1 } else { step }) {
                    boundaries.feed(chunk);
                    at += chunk.len();
                    prop_assert_eq!(boundaries.at_boundary(), ends.contains(&at), "at byte {}", at);
                    // Reading only what `bytes_to_boundary` allows stops at the frame's end.
                    let next_end = ends.iter().find(|e| **e > at).copied();
                    let left = boundaries.bytes_to_boundary();
                    if !boundaries.at_boundary() && boundaries.payload_left > 0 {
                        prop_assert_eq!(Some(at + left), next_end);
                    }
                }
            }
        }
    }

    #[test]
    fn the_close_frames_are_what_tungstenite_reads() {
        for (bytes, mask) in [
            (GOING_AWAY_TO_CLIENT.to_vec(), None),
            (
                going_away_to_server([1, 2, 3, 4]).to_vec(),
                Some([1, 2, 3, 4]),
            ),
        ] {
            let mut cursor = std::io::Cursor::new(bytes.clone());
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(header.opcode, OpCode::Control(Control::Close));
            assert!(header.is_final);
            assert_eq!(header.mask, mask);
            assert_eq!(len, 2);
            let at = cursor.position() as usize;
            let mut code = [bytes[at], bytes[at + 1]];
            if let Some(mask) = mask {
                code = [code[0] ^ mask[0], code[1] ^ mask[1]];
            }
            assert_eq!(u16::from_be_bytes(code), 1001);
        }
    }
}
