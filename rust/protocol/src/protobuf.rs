//! A minimal reader of protobuf's wire format, enough for CRIU's images: the messages are walked
//! field by field, every wire type decoded far enough to be skipped, so that a caller only looks
//! at the field numbers it knows and no protobuf toolchain enters the build.

/// Submessages nest once in a stats image; groups in unknown fields could nest deeper, and a
/// bound keeps hostile input from recursing without limit.
const MAX_GROUP_DEPTH: u32 = 32;

/// The last occurrence of length-delimited field `number` of `message`, which must be present.
pub(crate) fn submessage<'a>(message: &'a [u8], number: u32, name: &str) -> Result<&'a [u8], String> {
    let mut found = None;
    for_each_field(message, |n, value| {
        if n == number {
            match value {
                Value::Bytes(b) => found = Some(b),
                _ => return Err(format!("field `{name}` ({number}) is not a message")),
            }
        }
        Ok(())
    })?;
    found.ok_or_else(|| format!("holds no `{name}` statistics"))
}

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    /// A fixed-width value; stats.proto has none, so only its width matters.
    Fixed64,
    Bytes(&'a [u8]),
    /// As [`Value::Fixed64`].
    Fixed32,
    /// A (deprecated) group, skipped whole.
    Group,
}

impl Value<'_> {
    /// The value of a field stats.proto declares as uint32/uint64, i.e. a varint.
    pub(crate) fn varint(self, number: u32) -> Result<u64, String> {
        match self {
            Value::Varint(v) => Ok(v),
            other => Err(format!("field {number} should be a varint, found {other:?}")),
        }
    }
}

/// Calls `visit` with each field of `message` in order; fields of every wire type are decoded far
/// enough to be skipped, so a caller only looks at the numbers it knows.
pub(crate) fn for_each_field<'a>(
    message: &'a [u8],
    mut visit: impl FnMut(u32, Value<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut reader = Reader { buf: message, pos: 0 };
    while !reader.at_end() {
        let (number, value) = reader.field(0)?;
        visit(number, value)?;
    }
    Ok(())
}

/// As [`for_each_field`], also giving each field's encoded bytes (its key included), so that a
/// caller can copy the fields it does not change as they were.
pub(crate) fn for_each_field_raw<'a>(
    message: &'a [u8],
    mut visit: impl FnMut(u32, Value<'a>, &'a [u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut reader = Reader { buf: message, pos: 0 };
    while !reader.at_end() {
        let start = reader.pos;
        let (number, value) = reader.field(0)?;
        visit(number, value, &message[start..reader.pos])?;
    }
    Ok(())
}

/// Appends `value` as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends field `number` as a varint.
pub(crate) fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, value);
}

/// Appends field `number` as length-delimited bytes.
pub(crate) fn put_bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let start = self.pos;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or_else(|| format!("truncated varint at byte {start}"))?;
            self.pos += 1;
            // The 10th byte may only carry the top bit of a u64.
            if shift == 63 && byte > 1 {
                return Err(format!("varint at byte {start} overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint at byte {start} overflows 64 bits"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(len).filter(|&end| end <= self.buf.len()).ok_or_else(|| {
            format!("truncated: {len} bytes expected at byte {}, {} left", self.pos, self.buf.len() - self.pos)
        })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// Reads one field: its key, then its value according to the wire type.
    fn field(&mut self, depth: u32) -> Result<(u32, Value<'a>), String> {
        let at = self.pos;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| format!("field number out of range at byte {at}"))?;
        if number == 0 {
            return Err(format!("field number 0 at byte {at}"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| format!("length out of range at byte {at}"))?;
                Value::Bytes(self.take(len)?)
            }
            3 => {
                self.skip_group(number, depth + 1)?;
                Value::Group
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            4 => return Err(format!("unmatched end of group {number} at byte {at}")),
            other => return Err(format!("invalid wire type {other} at byte {at}")),
        };
        Ok((number, value))
    }

    /// Skips the fields of a group up to its end-group key.
    fn skip_group(&mut self, number: u32, depth: u32) -> Result<(), String> {
        if depth > MAX_GROUP_DEPTH {
            return Err(format!("groups nested deeper than {MAX_GROUP_DEPTH}"));
        }
        loop {
            if self.at_end() {
                return Err(format!("truncated: group {number} never ends"));
            }
            let at = self.pos;
            let key = self.varint()?;
            if key & 7 == 4 {
                return if key >> 3 == u64::from(number) {
                    Ok(())
                } else {
                    Err(format!("end of group {} at byte {at} inside group {number}", key >> 3))
                };
            }
            // Not the end: rewind and read the whole field (recursing into nested groups).
            self.pos = at;
            self.field(depth)?;
        }
    }
}
