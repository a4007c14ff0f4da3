//! `.npy` files (numpy format versions 1.0 to 3.0), little-endian, C order.
//!
//! The header is parsed by a small strict parser for the one dict literal
//! numpy writes; anything else is an error, never a guess.

use crate::{value::byte_len, DType, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";
/// numpy itself refuses headers above 10 000 bytes by default.
pub const HEADER_BYTES_MAX: usize = 65_536;
/// Rank limit: numpy's own is 64.
pub const RANK_MAX: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NpyError {
    #[error("not an .npy file (missing the \\x93NUMPY magic)")]
    Magic,
    #[error("unsupported .npy format version {0}.{1}")]
    Version(u8, u8),
    #[error("truncated .npy file: {0}")]
    Truncated(&'static str),
    #[error(".npy header of {0} bytes exceeds the limit of {HEADER_BYTES_MAX}")]
    HeaderTooLarge(usize),
    #[error("malformed .npy header: {0}")]
    Header(String),
    #[error("unsupported dtype {0:?} (supported: float16/32/64, int8-64, uint8-64, bool)")]
    DType(String),
    #[error("Fortran-order arrays are not supported; save with numpy.ascontiguousarray")]
    FortranOrder,
    #[error("data section holds {actual} bytes but shape {shape:?} of {dtype} needs {expected}")]
    DataLength {
        shape: Vec<usize>,
        dtype: DType,
        expected: usize,
        actual: usize,
    },
    #[error("shape {0:?} is too large")]
    Overflow(Vec<usize>),
    #[error("{0} cannot be stored in .npy (numpy has no such type)")]
    Unrepresentable(DType),
}

/// Decodes an `.npy` file. The caller bounds `bytes` (it has already been
/// read with a size limit); nothing here allocates more than `bytes.len()`.
pub fn decode(bytes: &[u8]) -> Result<Tensor, NpyError> {
    if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(if bytes.starts_with(&MAGIC[..bytes.len().min(MAGIC.len())]) {
            NpyError::Truncated("magic")
        } else {
            NpyError::Magic
        });
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, start) = match major {
        1 => {
            let b = bytes.get(8..10).ok_or(NpyError::Truncated("header length"))?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, 10)
        }
        2 | 3 => {
            let b = bytes.get(8..12).ok_or(NpyError::Truncated("header length"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        _ => return Err(NpyError::Version(major, minor)),
    };
    if header_len > HEADER_BYTES_MAX {
        return Err(NpyError::HeaderTooLarge(header_len));
    }
    let header = bytes
        .get(start..start + header_len)
        .ok_or(NpyError::Truncated("header"))?;
    let header = std::str::from_utf8(header).map_err(|_| NpyError::Header("header is not valid text".into()))?;
    let h = parse_header(header)?;
    let dtype = DType::from_npy_descr(&h.descr).ok_or(NpyError::DType(h.descr.clone()))?;
    if h.fortran_order && h.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(NpyError::FortranOrder);
    }
    let expected = byte_len(dtype, &h.shape).ok_or_else(|| NpyError::Overflow(h.shape.clone()))?;
    let data = &bytes[start + header_len..];
    if data.len() != expected {
        return Err(NpyError::DataLength {
            shape: h.shape,
            dtype,
            expected,
            actual: data.len(),
        });
    }
    Ok(Tensor::new(dtype, h.shape, data.to_vec()).expect("length checked above"))
}

/// Encodes a tensor as an `.npy` file (version 1.0 when the header fits).
pub fn encode(t: &Tensor) -> Result<Vec<u8>, NpyError> {
    let descr = t.dtype.npy_descr().ok_or(NpyError::Unrepresentable(t.dtype))?;
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending with '\n'.
    let v1 = header.len() + 11 < u16::MAX as usize;
    let prefix = if v1 { 10 } else { 12 };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    while prefix + header.len() + 1 < total {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(total + t.bytes().len());
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.bytes());
    Ok(out)
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

fn parse_header(s: &str) -> Result<Header, NpyError> {
    let bad = |m: &str| NpyError::Header(m.to_string());
    let mut p = Parser {
        s: s.trim_end().as_bytes(),
        i: 0,
    };
    p.expect(b'{').map_err(|_| bad("expected '{'"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string().ok_or_else(|| bad("expected a quoted key"))?;
        p.ws();
        p.expect(b':').map_err(|_| bad("expected ':'"))?;
        p.ws();
        match key.as_str() {
            "descr" => descr = Some(p.string().ok_or_else(|| bad("descr must be a string"))?),
            "fortran_order" => {
                fortran = Some(if p.word("True") {
                    true
                } else if p.word("False") {
                    false
                } else {
                    return Err(bad("fortran_order must be True or False"));
                })
            }
            "shape" => shape = Some(p.tuple().ok_or_else(|| bad("shape must be a tuple of integers"))?),
            other => return Err(NpyError::Header(format!("unexpected key {other:?}"))),
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}').map_err(|_| bad("expected ',' or '}'"))?;
            break;
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(bad("trailing characters after the dict"));
    }
    Ok(Header {
        descr: descr.ok_or_else(|| bad("missing 'descr'"))?,
        fortran_order: fortran.ok_or_else(|| bad("missing 'fortran_order'"))?,
        shape: shape.ok_or_else(|| bad("missing 'shape'"))?,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), ()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(())
        }
    }
    fn word(&mut self, w: &str) -> bool {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            true
        } else {
            false
        }
    }
    fn string(&mut self) -> Option<String> {
        let q = *self.s.get(self.i)?;
        if q != b'\'' && q != b'"' {
            return None;
        }
        let start = self.i + 1;
        let end = start + self.s[start..].iter().position(|&c| c == q)?;
        self.i = end + 1;
        Some(String::from_utf8_lossy(&self.s[start..end]).into_owned())
    }
    fn tuple(&mut self) -> Option<Vec<usize>> {
        if !self.eat(b'(') {
            return None;
        }
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Some(dims);
            }
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            dims.push(text.parse().ok()?);
            if dims.len() > RANK_MAX {
                return None;
            }
            self.ws();
            // A trailing 'L' is what Python 2 wrote for long integers.
            self.eat(b'L');
            if !self.eat(b',') {
                self.ws();
                return if self.eat(b')') { Some(dims) } else { None };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_and_numpy_header() {
        let t = Tensor::from_f32(vec![2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        let bytes = encode(&t).unwrap();
        assert_eq!(bytes.len() % 64, 24);
        assert!(std::str::from_utf8(&bytes[10..74])
            .unwrap()
            .starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert_eq!(decode(&bytes).unwrap(), t);
        let scalar = Tensor::from_i64(vec![], &[7]).unwrap();
        assert_eq!(decode(&encode(&scalar).unwrap()).unwrap(), scalar);
        let vec1 = Tensor::from_i64(vec![1], &[7]).unwrap();
        assert_eq!(decode(&encode(&vec1).unwrap()).unwrap(), vec1);
    }

    #[test]
    fn hostile_files_are_errors() {
        let t = Tensor::from_f32(vec![4], &[1., 2., 3., 4.]).unwrap();
        let good = encode(&t).unwrap();
        assert_eq!(decode(b"PK\x03\x04 zip"), Err(NpyError::Magic));
        assert_eq!(decode(&good[..5]), Err(NpyError::Truncated("magic")));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(NpyError::DataLength { .. })
        ));
        let mut huge = good[..10].to_vec();
        huge.extend_from_slice(
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 9999999999), }",
        );
        let n = (huge.len() - 10) as u16;
        huge[8..10].copy_from_slice(&n.to_le_bytes());
        assert!(matches!(decode(&huge), Err(NpyError::Overflow(_))));
        let mut strs = good.clone();
        let pos = strs.windows(3).position(|w| w == b"<f4").unwrap();
        strs[pos..pos + 3].copy_from_slice(b"<U4");
        assert_eq!(decode(&strs), Err(NpyError::DType("<U4".into())));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_headers(pos in 0usize..80, byte in any::<u8>()) {
            let t = Tensor::from_f32(vec![2, 2], &[1., 2., 3., 4.]).unwrap();
            let mut bytes = encode(&t).unwrap();
            let p = pos % bytes.len();
            bytes[p] = byte;
            if let Ok(d) = decode(&bytes) {
                prop_assert_eq!(d.bytes().len(), crate::value::byte_len(d.dtype, &d.shape).unwrap());
            }
        }
    }
}
