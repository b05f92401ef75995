//! The TensorBoard event-file format, encoded by hand: TFRecord framing around `Event`
//! protobufs (tensorflow/core/util/event.proto, framework/summary.proto).
//!
//! No crate: `tboard` generates its protobuf code at build time with prost-build (which needs
//! `protoc`), `tensorboard-rs` brings protobuf 2 and image 0.23; a protobuf crate plus a CRC
//! crate would add a proc-macro tree to a 2-core build for the four messages written here.
//! The encoding below is checked against the `tensorboard` package's own reader in the tests.

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum TFRecord uses.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = crc_table();
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// TFRecord's masked CRC, `((crc >> 15) | (crc << 17)) + 0xa282ead8`: a CRC stored next to
/// data that itself holds CRCs would be weak.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    crc32c(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: u64 LE length, masked CRC of the length bytes, data, masked CRC of the data.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// What an event carries besides its time and step (the `what` oneof of `Event`).
pub enum Payload<'a> {
    /// `file_version = 3`: "brain.Event:2", the first event of every file.
    FileVersion,
    /// `summary = 5`: scalars as `Summary.Value { tag = 1, simple_value = 2 }`.
    Scalars(&'a [(String, f32)]),
    /// `session_log = 7` with status START: a reader drops the points it holds at this step
    /// and later (a restarted run's orphans).
    SessionStart,
}

/// The bytes of one `Event` protobuf.
pub fn event(wall_time: f64, step: i64, payload: Payload) -> Vec<u8> {
    let mut out = Vec::new();
    field_fixed64(&mut out, 1, wall_time.to_bits());
    field_key(&mut out, 2, WIRE_VARINT);
    varint(&mut out, step as u64);
    match payload {
        Payload::FileVersion => field_bytes(&mut out, 3, b"brain.Event:2"),
        Payload::Scalars(values) => {
            let mut summary = Vec::new();
            for (tag, value) in values {
                let mut entry = Vec::new();
                field_bytes(&mut entry, 1, tag.as_bytes());
                field_key(&mut entry, 2, WIRE_FIXED32);
                entry.extend_from_slice(&value.to_le_bytes());
                field_bytes(&mut summary, 1, &entry);
            }
            field_bytes(&mut out, 5, &summary);
        }
        Payload::SessionStart => {
            let mut log = Vec::new();
            field_key(&mut log, 1, WIRE_VARINT);
            varint(&mut log, 1); // SessionLog.START
            field_bytes(&mut out, 7, &log);
        }
    }
    out
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_BYTES: u8 = 2;
const WIRE_FIXED32: u8 = 5;

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn field_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn field_fixed64(out: &mut Vec<u8>, field: u32, bits: u64) {
    field_key(out, field, WIRE_FIXED64);
    out.extend_from_slice(&bits.to_le_bytes());
}

fn field_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    field_key(out, field, WIRE_BYTES);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}
