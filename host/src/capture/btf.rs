//! A minimal reader of Linux BTF (BPF Type Format) that answers one question:
//! at which byte offset, and with what size, does a struct member live?
//!
//! Rust eBPF programs have no CO-RE relocations, so the agent reads the
//! running kernel's BTF once at start-up and hands the offsets of the kernel
//! struct members it needs to its eBPF programs. The reader is pure (bytes in,
//! offsets out) and never panics on malformed input.
//! For example `Btf::from_vmlinux()?.field("tcp_sock.bytes_acked")` gives
//! `Field { offset, size: 8 }`.

use std::{fs, io, ops::Range, path::PathBuf};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const MAGIC: u16 = 0xeb9f;
/// Bounds typedef chains and nesting, so a cyclic blob ends in an error.
const MAX_DEPTH: usize = 64;

const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FLOAT: u32 = 16;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// Parsed BTF type and string sections.
#[derive(Debug)]
pub struct Btf {
    /// The type section as little-endian words.
    words: Vec<u32>,
    /// Each type's record in `words`, checked at parse time; type id `n` is
    /// `records[n - 1]` (id 0 is void).
    records: Vec<Range<usize>>,
    strings: Vec<u8>,
}

/// A member found: bit offset, type id, whether it is a bitfield.
type Hit = (u64, u32, bool);

/// One decoded type record.
struct Type<'a> {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    size_or_type: u32,
    /// Kind-specific data: ARRAY `{type, index_type, nelems}`, INT
    /// `{encoding}`, STRUCT/UNION `{name_off, type, offset}` per member.
    data: &'a [u32],
}

/// Where a member lives inside its outermost struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// Byte size of the member's resolved type.
    pub size: u32,
}

/// Errors from reading BTF or looking a member up in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read BTF from {}", path.display())]
    Io {
        /// The file that was read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The blob does not start with the little-endian BTF magic 0xeB9F.
    #[error("not little-endian BTF: magic is {0:#06x}, expected 0xeb9f")]
    BadMagic(u16),
    /// A header field, section or type runs past its data, or is otherwise invalid.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// Type `.0` has kind `.1`, which this reader does not know.
    #[error("malformed BTF: type {0} has unknown kind {1}")]
    UnknownKind(u32, u32),
    /// A type refers to a type id that does not exist.
    #[error("malformed BTF: reference to missing type id {0}")]
    BadTypeId(u32),
    /// A name offset points outside the string section.
    #[error("malformed BTF: bad string offset {0}")]
    BadString(u32),
    /// The path is not of the form `STRUCT.member[.member...]`.
    #[error("bad field path `{0}`: expected STRUCT.member[.member...]")]
    BadPath(String),
    /// No struct of that name with a nonzero size exists.
    #[error("no struct named `{0}` in BTF")]
    NoStruct(String),
    /// The struct or union at path prefix `.0` has no member `.1`.
    #[error("`{0}` has no member `{1}`")]
    NoMember(String, String),
    /// The member at this path is a bitfield, which has no byte offset.
    #[error("`{0}` is a bitfield")]
    Bitfield(String),
    /// The path descends into this member, which is not a struct or union.
    #[error("`{0}` is not a struct or union")]
    NotComposite(String),
    /// The member at this path has a type without a size (void, function, forward declaration).
    #[error("the type of `{0}` has no size")]
    Unsized(String),
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}

fn section(bytes: &[u8], hdr_len: u32, off: u32, len: u32) -> Result<&[u8], BtfError> {
    let start = (hdr_len as usize).checked_add(off as usize);
    let end = start.and_then(|s| s.checked_add(len as usize));
    start
        .zip(end)
        .and_then(|(start, end)| bytes.get(start..end))
        .ok_or(BtfError::Malformed("section out of range"))
}

impl Btf {
    /// Parses a raw BTF blob, such as the contents of `/sys/kernel/btf/vmlinux`.
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        let magic = bytes
            .get(..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or(BtfError::Malformed("truncated header"))?;
        if magic != MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let word =
            |i: usize| u32_at(bytes, 4 + 4 * i).ok_or(BtfError::Malformed("truncated header"));
        let (hdr_len, type_off, type_len) = (word(0)?, word(1)?, word(2)?);
        let (str_off, str_len) = (word(3)?, word(4)?);
        let type_bytes = section(bytes, hdr_len, type_off, type_len)?;
        let strings = section(bytes, hdr_len, str_off, str_len)?.to_vec();
        if type_bytes.len() % 4 != 0 {
            return Err(BtfError::Malformed("type section is not whole words"));
        }
        let words: Vec<u32> = type_bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();

        let mut records = Vec::new();
        let mut at = 0;
        while at < words.len() {
            let info = *words
                .get(at + 1)
                .ok_or(BtfError::Malformed("truncated type"))?;
            let vlen = (info & 0xffff) as usize;
            let data_len = match (info >> 24) & 0x1f {
                // INT, VAR, DECL_TAG
                INT | 14 | 17 => 1,
                ARRAY => 3,
                // STRUCT, UNION, DATASEC, ENUM64
                STRUCT | UNION | 15 | ENUM64 => 3 * vlen,
                // ENUM, FUNC_PROTO
                ENUM | 13 => 2 * vlen,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                PTR | 7..=12 | FLOAT | TYPE_TAG => 0,
                kind => return Err(BtfError::UnknownKind(records.len() as u32 + 1, kind)),
            };
            let end = at + 3 + data_len;
            if end > words.len() {
                return Err(BtfError::Malformed("truncated type"));
            }
            records.push(at..end);
            at = end;
        }
        Ok(Btf {
            words,
            records,
            strings,
        })
    }

    /// Reads the running kernel's BTF from /sys/kernel/btf/vmlinux.
    pub fn from_vmlinux() -> Result<Btf, BtfError> {
        let bytes = fs::read(VMLINUX).map_err(|source| BtfError::Io {
            path: VMLINUX.into(),
            source,
        })?;
        Btf::parse(&bytes)
    }

    /// Where a member lives. `path` is "STRUCT.member.member...", e.g.
    /// "tcp_sock.bytes_acked" or "sock.__sk_common.skc_net".
    pub fn field(&self, path: &str) -> Result<Field, BtfError> {
        let names: Vec<&str> = path.split('.').collect();
        if names.len() < 2 || names.iter().any(|n| n.is_empty()) {
            return Err(BtfError::BadPath(path.to_owned()));
        }
        let mut ty = self.find_struct(names[0])?;
        let mut bits = 0u64;
        for i in 1..names.len() {
            let comp = self.resolve(ty)?;
            if !matches!(self.kind(comp)?, STRUCT | UNION) {
                return Err(BtfError::NotComposite(names[..i].join(".")));
            }
            let (off, member_ty, bitfield) = self
                .find_member(comp, names[i], 0)?
                .ok_or_else(|| BtfError::NoMember(names[..i].join("."), names[i].to_owned()))?;
            if bitfield {
                return Err(BtfError::Bitfield(names[..=i].join(".")));
            }
            bits += off;
            ty = member_ty;
        }
        let size = self
            .size_of(ty, 0)?
            .ok_or_else(|| BtfError::Unsized(path.to_owned()))?;
        let offset =
            u32::try_from(bits / 8).map_err(|_| BtfError::Malformed("offset overflows"))?;
        Ok(Field { offset, size })
    }

    fn ty(&self, id: u32) -> Result<Type<'_>, BtfError> {
        let record = self.records.get((id as usize).wrapping_sub(1));
        let words = &self.words[record.ok_or(BtfError::BadTypeId(id))?.clone()];
        Ok(Type {
            name_off: words[0],
            kind: (words[1] >> 24) & 0x1f,
            kind_flag: words[1] >> 31 == 1,
            size_or_type: words[2],
            data: &words[3..],
        })
    }

    /// The kind of type `id`, with 0 for void.
    fn kind(&self, id: u32) -> Result<u32, BtfError> {
        Ok(if id == 0 { 0 } else { self.ty(id)?.kind })
    }

    fn name(&self, off: u32) -> Result<&[u8], BtfError> {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or(BtfError::BadString(off))?;
        Ok(&tail[..end])
    }

    fn find_struct(&self, name: &str) -> Result<u32, BtfError> {
        for id in 1..=self.records.len() as u32 {
            let t = self.ty(id)?;
            if t.kind == STRUCT && t.size_or_type != 0 && self.name(t.name_off)? == name.as_bytes()
            {
                return Ok(id);
            }
        }
        Err(BtfError::NoStruct(name.to_owned()))
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            match self.kind(id)? {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = self.ty(id)?.size_or_type,
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed("type chain too deep"))
    }

    /// Finds `name` in the struct/union `comp`, searching anonymous members
    /// transparently; returns its bit offset in `comp`, its type and whether
    /// it is a bitfield.
    fn find_member(&self, comp: u32, name: &str, depth: usize) -> Result<Option<Hit>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Malformed("anonymous members nested too deep"));
        }
        let t = self.ty(comp)?;
        for m in t.data.chunks_exact(3) {
            let (name_off, member_ty, offset) = (m[0], m[1], m[2]);
            // With kind_flag set, the top byte is the bitfield width.
            let width = if t.kind_flag { offset >> 24 } else { 0 };
            let off = offset & !(width << 24);
            let member_name = self.name(name_off)?;
            if member_name == name.as_bytes() {
                let bitfield = width != 0 || off % 8 != 0 || self.is_partial_int(member_ty)?;
                return Ok(Some((u64::from(off), member_ty, bitfield)));
            }
            if !member_name.is_empty() {
                continue;
            }
            let inner = self.resolve(member_ty)?;
            if matches!(self.kind(inner)?, STRUCT | UNION)
                && let Some((o, ty, bitfield)) = self.find_member(inner, name, depth + 1)?
            {
                return Ok(Some((u64::from(off) + o, ty, bitfield || off % 8 != 0)));
            }
        }
        Ok(None)
    }

    /// Whether `id` is an int narrower than its storage: an old-style bitfield.
    fn is_partial_int(&self, id: u32) -> Result<bool, BtfError> {
        let id = self.resolve(id)?;
        if self.kind(id)? != INT {
            return Ok(false);
        }
        let t = self.ty(id)?;
        let (bits, bit_off) = (t.data[0] & 0xff, (t.data[0] >> 16) & 0xff);
        Ok(bit_off != 0 || u64::from(bits) != u64::from(t.size_or_type) * 8)
    }

    /// The byte size of `id`'s resolved type, or `None` when it has none.
    fn size_of(&self, id: u32, depth: usize) -> Result<Option<u32>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Malformed("array nesting too deep"));
        }
        let id = self.resolve(id)?;
        if id == 0 {
            return Ok(None);
        }
        let t = self.ty(id)?;
        Ok(match t.kind {
            INT | STRUCT | UNION | ENUM | ENUM64 | FLOAT => Some(t.size_or_type),
            PTR => Some(8),
            ARRAY => match self.size_of(t.data[0], depth + 1)? {
                Some(elem) => Some(
                    elem.checked_mul(t.data[2])
                        .ok_or(BtfError::Malformed("array size overflows"))?,
                ),
                None => None,
            },
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob type by type; `add` and `comp` return the new type id.
    #[derive(Default)]
    struct Blob {
        types: Vec<u32>,
        strings: Vec<u8>,
        count: u32,
    }

    impl Blob {
        /// Interns `s`; the string section gets a leading NUL in `bytes`.
        fn str(&mut self, s: &str) -> u32 {
            let off = self.strings.len() as u32 + 1;
            self.strings.extend(s.bytes().chain([0]));
            if s.is_empty() { 0 } else { off }
        }

        fn add(&mut self, name: &str, info: u32, size: u32, data: &[u32]) -> u32 {
            let record = [self.str(name), info, size];
            self.types.extend(record.iter().chain(data));
            self.count += 1;
            self.count
        }

        /// A struct or union; `members` are (name, type, offset word).
        fn comp(&mut self, name: &str, info: u32, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let data: Vec<u32> = members
                .iter()
                .flat_map(|&(n, t, o)| [self.str(n), t, o])
                .collect();
            self.add(name, info | members.len() as u32, size, &data)
        }

        fn bytes(&self) -> Vec<u8> {
            let (type_len, str_len) = (self.types.len() as u32 * 4, self.strings.len() as u32 + 1);
            let words = [24, 0, type_len, type_len, str_len]
                .into_iter()
                .chain(self.types.clone());
            let mut out = vec![0x9f, 0xeb, 1, 0];
            out.extend(words.flat_map(u32::to_le_bytes));
            out.push(0);
            out.extend(&self.strings);
            out
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = Blob::default();
        b.comp("outer", STRUCT << 24, 0, &[]); // a zero-size declaration, skipped
        let int = b.add("int", INT << 24, 4, &[(1 << 24) | 32]);
        let u64_ = b.add("u64", INT << 24, 8, &[64]);
        let bits3 = b.add("int", INT << 24, 4, &[3]);
        let ptr = b.add("", PTR << 24, int, &[]);
        let abc = [("a", int, 0), ("b", int, 32), ("c", bits3, 64)];
        let inner = b.comp("inner", STRUCT << 24, 12, &abc);
        let typedef = b.add("inner_t", TYPEDEF << 24, inner, &[]);
        let konst = b.add("", CONST << 24, typedef, &[]);
        let anon = b.comp("", UNION << 24, 8, &[("x", u64_, 0), ("y", int, 0)]);
        let arr = b.add("", ARRAY << 24, 0, &[int, int, 3]);
        let (bits, with_bitfields) = ((3 << 24) | 384, (STRUCT << 24) | (1 << 31));
        let first = [("i", int, 0), ("p", ptr, 64), ("", anon, 128)];
        let rest = [("n", konst, 192), ("arr", arr, 288), ("flags", int, bits)];
        b.comp("outer", with_bitfields, 56, &[first, rest].concat());
        b.bytes()
    }

    /// Paths in `sample`: the first eight resolve, the last two are bitfields.
    const PATHS: &str = "outer.i outer.p outer.x outer.y outer.n outer.n.b outer.arr inner.a \
                         outer.flags outer.n.c";

    #[test]
    fn finds_members_of_a_synthetic_struct() {
        let btf = Btf::parse(&sample()).expect("sample parses");
        let offsets = [0, 8, 16, 16, 24, 28, 36, 0];
        let sizes = [4, 8, 8, 4, 12, 4, 12, 4];
        for (path, (offset, size)) in PATHS.split_whitespace().zip(offsets.into_iter().zip(sizes)) {
            let field = btf.field(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(field, Field { offset, size }, "{path}");
        }
        let err = |p| btf.field(p).expect_err(p).to_string();
        assert_eq!(err("outer.flags"), "`outer.flags` is a bitfield");
        assert_eq!(err("outer.n.c"), "`outer.n.c` is a bitfield");
        assert_eq!(err("outer.nope"), "`outer` has no member `nope`");
        assert_eq!(err("outer.n.zz"), "`outer.n` has no member `zz`");
        assert_eq!(err("outer.i.x"), "`outer.i` is not a struct or union");
        assert_eq!(err("nosuch.x"), "no struct named `nosuch` in BTF");
        assert!(matches!(btf.field("outer"), Err(BtfError::BadPath(_))));
        assert!(matches!(btf.field("outer..i"), Err(BtfError::BadPath(_))));
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        let blob = sample();
        for len in 0..blob.len() {
            assert!(Btf::parse(&blob[..len]).is_err(), "{len}-byte prefix");
        }
        let mut swapped = blob.clone();
        swapped.swap(0, 1);
        let err = Btf::parse(&swapped).unwrap_err();
        assert!(matches!(err, BtfError::BadMagic(0x9feb)), "{err}");
        // Corrupt each byte in turn: parsing and lookups may fail, never panic.
        for (i, v) in (0..blob.len()).flat_map(|i| [0, 1, 0x13, 0x7f, 0xff].map(|v| (i, v))) {
            let mut bad = blob.clone();
            bad[i] = v;
            if let Ok(btf) = Btf::parse(&bad) {
                PATHS.split_whitespace().for_each(|p| drop(btf.field(p)));
            }
        }
    }

    #[test]
    fn reads_running_kernel() {
        let btf = Btf::from_vmlinux().expect("the running kernel's BTF parses");
        let eights = "tcp_sock.bytes_acked tcp_sock.bytes_received sock.__sk_common.skc_net";
        let fours = "tcp_sock.srtt_us tcp_sock.segs_in tcp_sock.segs_out tcp_sock.total_retrans \
                     sock.sk_err net.ns.inum";
        let sizes = eights.split(' ').map(|p| (p, 8));
        for (path, size) in sizes.chain(fours.split_whitespace().map(|p| (p, 4))) {
            let f = btf.field(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let outer = btf.find_struct(path.split('.').next().unwrap()).unwrap();
            let total = btf.ty(outer).unwrap().size_or_type;
            assert_eq!(f.size, size, "{path}: {f:?}");
            let inside = f.offset > 0 && f.offset + f.size <= total;
            assert!(inside, "{path}: {f:?} in {total} bytes");
        }
        assert_eq!(btf.field("sock.__sk_common").unwrap().offset, 0);
    }
}
