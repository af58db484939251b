//! Walking protobuf fields by hand, without decoding them: the batch id a
//! refusal names ([`super::peek`]) and the counts checked before anything
//! is allocated ([`super::limits`]).

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// One field's value as it sits in the buffer.
pub(super) enum Value<'a> {
    /// A varint, fixed32 or fixed64 (its value is not needed).
    Scalar,
    /// A length-delimited field's bytes (cut to those present), and
    /// whether they are all there.
    Len(&'a [u8], bool),
}

/// Reads the next field off the front of `buf`: its tag and value. `None`
/// when the bytes are not a field (a bad key, a wire type other than the
/// four above, a varint cut short or longer than 64 bits).
pub(super) fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u64, Value<'a>)> {
    let key = varint(buf)?;
    let (tag, wire_type) = (key >> 3, key & 7);
    if tag == 0 {
        return None;
    }
    let value = match wire_type {
        VARINT => {
            varint(buf)?;
            Value::Scalar
        }
        FIXED64 => {
            *buf = buf.get(8..)?;
            Value::Scalar
        }
        FIXED32 => {
            *buf = buf.get(4..)?;
            Value::Scalar
        }
        LEN => {
            let len = usize::try_from(varint(buf)?).ok()?;
            let end = len.min(buf.len());
            let (bytes, rest) = buf.split_at(end);
            *buf = rest;
            Value::Len(bytes, end == len)
        }
        _ => return None,
    };
    Some((tag, value))
}

/// Reads a varint off the front of `buf`; `None` when it is cut short or
/// does not fit 64 bits (a tenth byte above 1, as protobuf decoders refuse).
pub(super) fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_past_64_bits_or_cut_short_are_refused() {
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(varint(&mut &max[..]), Some(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(varint(&mut &over[..]), None);
        let eleven = [0xff; 11];
        assert_eq!(varint(&mut &eleven[..]), None);
        assert_eq!(varint(&mut &[0x80][..]), None);
        let mut rest: &[u8] = &[0x96, 0x01, 7];
        assert_eq!(varint(&mut rest), Some(150));
        assert_eq!(rest, [7]);
    }

    #[test]
    fn fields_are_walked_and_bad_keys_refused() {
        // tag 1 varint 5, tag 2 len 2 "ab", tag 3 fixed32, tag 4 len 9 cut.
        let bytes = [0x08, 5, 0x12, 2, b'a', b'b', 0x1d, 0, 0, 0, 0, 0x22, 9, 1];
        let mut buf = &bytes[..];
        assert!(matches!(next_field(&mut buf), Some((1, Value::Scalar))));
        assert!(matches!(
            next_field(&mut buf),
            Some((2, Value::Len(b"ab", true)))
        ));
        assert!(matches!(next_field(&mut buf), Some((3, Value::Scalar))));
        assert!(matches!(
            next_field(&mut buf),
            Some((4, Value::Len(&[1], false)))
        ));
        assert!(buf.is_empty());
        // Tag 0, and a group (wire type 3).
        assert!(next_field(&mut &[0x00, 1][..]).is_none());
        assert!(next_field(&mut &[0x0b][..]).is_none());
    }
}
