//! Unsigned LEB128 varints (7 bits a byte, low group first, high bit =
//! more follows) and zigzag for signed deltas (0, -1, 1, -2 … → 0, 1, 2, 3 …).

/// Appends `v` as a varint of 1 to 10 bytes.
#[inline]
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Maps a signed value to an unsigned one with small magnitudes small.
#[inline]
pub const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[inline]
pub const fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes end before the varint does.
    Truncated,
    /// More than 64 bits (an 11th byte, or a 10th byte above 1).
    TooLong,
}

/// Reads a varint from the start of `bytes`: the value and its length.
#[inline]
pub fn get(bytes: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(VarintError::TooLong);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((v, i + 1));
        }
    }
    if bytes.len() >= 10 {
        Err(VarintError::TooLong)
    } else {
        Err(VarintError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_every_length() {
        let mut values = vec![0, 1, 127, 128, 300, u64::MAX, u64::MAX - 1];
        values.extend((0..64).map(|b| 1u64 << b));
        values.extend((1..64).map(|b| (1u64 << b) - 1));
        for v in values {
            let mut out = Vec::new();
            put(&mut out, v);
            assert_eq!(
                out.len(),
                (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
            );
            assert_eq!(get(&out), Ok((v, out.len())), "{v}");
            out.push(0xff);
            assert_eq!(get(&out), Ok((v, out.len() - 1)), "{v} with a byte after");
        }
    }

    #[test]
    fn truncated_and_overlong_varints_are_errors() {
        assert_eq!(get(&[]), Err(VarintError::Truncated));
        assert_eq!(get(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(get(&[0xff; 10]), Err(VarintError::TooLong));
        assert_eq!(get(&[0xff; 11]), Err(VarintError::TooLong));
        let mut max = [0xff; 10];
        max[9] = 0x01;
        assert_eq!(get(&max), Ok((u64::MAX, 10)));
        max[9] = 0x02;
        assert_eq!(get(&max), Err(VarintError::TooLong));
    }

    #[test]
    fn zigzag_keeps_small_magnitudes_small() {
        for (v, z) in [
            (0, 0),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (i64::MAX, u64::MAX - 1),
            (i64::MIN, u64::MAX),
        ] {
            assert_eq!(zigzag(v), z);
            assert_eq!(unzigzag(z), v);
        }
    }
}
