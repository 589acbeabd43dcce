//! Reading the bytes an HTTP/2 client sends as frames, to find its PING acknowledgements.

/// What a client sends first on an HTTP/2 connection, before any frame.
pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reading a client's HTTP/2 byte stream as frames, from its preface on.
#[derive(Debug, Default)]
pub(super) struct FrameCursor {
    /// Bytes of the preface already read.
    preface_read: usize,
    /// How far the buffer is read: whole frames (or the preface) before it.
    pub(super) read: usize,
}

/// The bytes were not an HTTP/2 client's.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct NotFrames;

impl FrameCursor {
    /// Reads `buffered` on from where it stopped, moving every whole PING acknowledgement (a
    /// PING frame with the ACK flag) into `acks`; a frame not yet written whole stays unread.
    pub(super) fn take_ping_acks(&mut self, buffered: &mut Vec<u8>, acks: &mut Vec<u8>) -> Result<(), NotFrames> {
        if self.preface_read < PREFACE.len() {
            let n = (PREFACE.len() - self.preface_read).min(buffered.len() - self.read);
            if buffered[self.read..self.read + n] != PREFACE[self.preface_read..self.preface_read + n] {
                return Err(NotFrames);
            }
            self.preface_read += n;
            self.read += n;
        }
        while let Some(header) = buffered.get(self.read..self.read + 9) {
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let end = self.read + 9 + length;
            if end > buffered.len() {
                break;
            }
            if kind == 6 && flags & 1 == 1 && length == 8 && stream == 0 {
                acks.extend(buffered.drain(self.read..end));
            } else {
                self.read = end;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame's bytes: header (length, type, flags, stream) and payload.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = (payload.len() as u32).to_be_bytes();
        let mut bytes = vec![length[1], length[2], length[3], kind, flags];
        bytes.extend(stream.to_be_bytes());
        bytes.extend(payload);
        bytes
    }

    fn ping_ack() -> Vec<u8> {
        frame(6, 1, 0, &[1, 2, 3, 4, 5, 6, 7, 8])
    }

    #[test]
    fn ping_acknowledgements_are_taken_out_and_every_other_frame_stays_in_order() {
        let settings = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let headers = frame(1, 4, 1, b"hpack");
        let data = frame(0, 1, 1, b"grpc message");
        let our_ping = frame(6, 0, 0, &[9; 8]);
        // (what was written, what stays to be sent, what is held back), frame by frame
        type Frames = Vec<Vec<u8>>;
        let cases: Vec<(Frames, Frames, Frames)> = vec![
            (vec![PREFACE.to_vec(), settings.clone()], vec![PREFACE.to_vec(), settings.clone()], vec![]),
            (
                vec![PREFACE.to_vec(), ping_ack(), headers.clone(), ping_ack(), data.clone()],
                vec![PREFACE.to_vec(), headers.clone(), data.clone()],
                vec![ping_ack(), ping_ack()],
            ),
            // Our own keepalive ping (no ACK flag) is sent as written.
            (vec![PREFACE.to_vec(), our_ping.clone()], vec![PREFACE.to_vec(), our_ping.clone()], vec![]),
        ];
        for (written, stays, held) in cases {
            let (mut buffered, mut acks, mut cursor) = (written.concat(), Vec::new(), FrameCursor::default());
            cursor.take_ping_acks(&mut buffered, &mut acks).expect("frames");
            assert_eq!(buffered, stays.concat());
            assert_eq!(acks, held.concat());
            assert_eq!(cursor.read, buffered.len(), "every frame was whole: all read");
        }
    }

    #[test]
    fn the_preface_and_frames_may_arrive_in_pieces() {
        let written = [PREFACE.to_vec(), ping_ack(), frame(1, 4, 1, b"hpack")].concat();
        let (mut cursor, mut buffered, mut acks) = (FrameCursor::default(), Vec::new(), Vec::new());
        for piece in written.chunks(5) {
            buffered.extend_from_slice(piece);
            cursor.take_ping_acks(&mut buffered, &mut acks).expect("frames");
            assert!(cursor.read <= buffered.len());
        }
        assert_eq!(acks, ping_ack(), "the acknowledgement, once whole");
        assert_eq!(buffered, [PREFACE.to_vec(), frame(1, 4, 1, b"hpack")].concat());
        assert_eq!(cursor.read, buffered.len());
    }

    #[test]
    fn a_frame_not_written_whole_stays_unread() {
        let partial = ping_ack()[..12].to_vec();
        let mut buffered = [PREFACE.to_vec(), partial].concat();
        let (mut cursor, mut acks) = (FrameCursor::default(), Vec::new());
        cursor.take_ping_acks(&mut buffered, &mut acks).expect("frames");
        assert!(acks.is_empty());
        assert_eq!(cursor.read, PREFACE.len(), "read up to the partial frame");
    }

    #[test]
    fn bytes_that_are_not_an_http2_client_s_are_refused() {
        // A TLS ClientHello record, as a TLS connection would start.
        let mut buffered = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
        let mut acks = Vec::new();
        assert_eq!(FrameCursor::default().take_ping_acks(&mut buffered, &mut acks), Err(NotFrames));
        assert_eq!(buffered.len(), 9, "nothing taken");
    }
}
