//! A delivery's body: read whole within one deadline, bounded in size and charged to the
//! memory budget; then unwrapped of what a sender may have put around the JSON
//! (`Content-Encoding`, a byte-order mark, UTF-16). Nothing here refuses a body for what
//! it contains: what cannot be unwrapped is kept as it came.

use std::io::Read;
use std::time::Instant;

use actix_web::error::PayloadError;
use actix_web::http::header::{HeaderMap, CONTENT_ENCODING};
use actix_web::web;
use futures::StreamExt;

use crate::budget::{Charge, OverBudget};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the limit, before or after decompression; `partial` is what was read (at most
    /// the limit), as received.
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: usize, partial: Vec<u8> },
    /// The whole body did not arrive by the deadline.
    #[error("body did not arrive in time")]
    TooSlow,
    /// The connection broke (or the client declared a length it did not send).
    #[error("connection broke before the body was complete")]
    Broken,
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
}

/// Reads the whole body by `deadline`, refusing more than `limit` bytes, charging every
/// byte to `charge`.
pub async fn read(
    mut payload: web::Payload,
    limit: usize,
    deadline: Instant,
    charge: &mut Charge,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline.into(), payload.next())
            .await
            .map_err(|_| BodyError::TooSlow)?;
        let chunk = match next {
            None => return Ok(body),
            Some(Ok(chunk)) => chunk,
            Some(Err(PayloadError::Overflow)) => {
                return Err(BodyError::TooLarge {
                    limit,
                    partial: body,
                })
            }
            Some(Err(_)) => return Err(BodyError::Broken),
        };
        let room = limit - body.len();
        let take = &chunk[..chunk.len().min(room)];
        charge.grow(take.len())?;
        body.extend_from_slice(take);
        if chunk.len() > room {
            return Err(BodyError::TooLarge {
                limit,
                partial: body,
            });
        }
    }
}

/// A `Content-Encoding` ingest can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    /// HTTP's `deflate` is zlib; some senders send raw deflate, which is read too.
    Deflate,
    Brotli,
}

/// The encodings applied to the body, in the order they were applied; `Err` names one
/// ingest cannot undo.
pub fn encodings(headers: &HeaderMap) -> Result<Vec<Encoding>, String> {
    let mut found = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let value = value.to_str().map_err(|_| "(not text)".to_owned())?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.to_ascii_lowercase().as_str() {
                "identity" => {}
                "gzip" | "x-gzip" => found.push(Encoding::Gzip),
                "deflate" => found.push(Encoding::Deflate),
                "br" => found.push(Encoding::Brotli),
                _ => return Err(name.to_owned()),
            }
        }
    }
    Ok(found)
}

/// What decoding made of a body.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Body(Vec<u8>),
    /// Not in the encoding it claimed: kept as received.
    Undecodable,
}

/// Undoes `encodings` (last applied first), with `limit` applied to what comes out,
/// charging it to `charge`.
pub fn decode(
    body: &[u8],
    encodings: &[Encoding],
    limit: usize,
    charge: &mut Charge,
) -> Result<Decoded, BodyError> {
    let mut current = body.to_vec();
    charge.grow(current.len())?;
    for encoding in encodings.iter().rev() {
        let decoded = match encoding {
            Encoding::Gzip => inflate(flate2::read::MultiGzDecoder::new(&current[..]), limit),
            Encoding::Deflate => inflate(flate2::read::ZlibDecoder::new(&current[..]), limit)
                .or_else(|_| inflate(flate2::read::DeflateDecoder::new(&current[..]), limit)),
            Encoding::Brotli => inflate(
                brotli_decompressor::Decompressor::new(&current[..], 4096),
                limit,
            ),
        };
        current = match decoded {
            Ok(Some(out)) => out,
            Ok(None) => {
                return Err(BodyError::TooLarge {
                    limit,
                    partial: body.to_vec(),
                })
            }
            Err(_) => return Ok(Decoded::Undecodable),
        };
        charge.grow(current.len())?;
    }
    Ok(Decoded::Body(current))
}

/// Everything `reader` yields, or `None` when that is more than `limit` bytes (reading
/// stops there, so a small bomb cannot fill the memory).
fn inflate(reader: impl Read, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out)?;
    Ok((out.len() <= limit).then_some(out))
}

/// The body as UTF-8 text when a byte-order mark says it is UTF-8 (the mark is dropped)
/// or UTF-16 (transcoded, when valid and no longer than `limit`); otherwise unchanged.
/// JSON is UTF-8 without a mark (RFC 8259, section 8.1), but some senders add one.
pub fn without_byte_order_mark(body: Vec<u8>, limit: usize) -> Vec<u8> {
    let utf16 = |bytes: &[u8], unit: fn([u8; 2]) -> u16| -> Option<Vec<u8>> {
        let units = bytes.chunks(2).map(|p| Some(unit([p[0], *p.get(1)?])));
        let units: Option<Vec<u16>> = units.collect();
        let text = String::from_utf16(&units?).ok()?;
        (text.len() <= limit).then(|| text.into_bytes())
    };
    match body.as_slice() {
        [0xEF, 0xBB, 0xBF, rest @ ..] => rest.to_vec(),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes).unwrap_or(body),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes).unwrap_or(body),
        _ => body,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::budget::Budget;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn decoded(body: &[u8], encodings: &[Encoding], limit: usize) -> Result<Decoded, BodyError> {
        decode(
            body,
            encodings,
            limit,
            &mut Budget::new(1 << 30, 1).charge(),
        )
    }

    #[test]
    fn undoes_gzip_deflate_in_either_form_and_layered_encodings() {
        let json = br#"{"id": 1}"#;
        let want = Decoded::Body(json.to_vec());
        assert_eq!(decoded(&gzip(json), &[Encoding::Gzip], 100).unwrap(), want);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
        zlib.write_all(json).unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(decoded(&zlib, &[Encoding::Deflate], 100).unwrap(), want);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Default::default());
        raw.write_all(json).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(decoded(&raw, &[Encoding::Deflate], 100).unwrap(), want);
        let twice = gzip(&zlib);
        let layers = [Encoding::Deflate, Encoding::Gzip];
        assert_eq!(decoded(&twice, &layers, 100).unwrap(), want);
    }

    #[test]
    fn the_limit_applies_to_what_decompression_yields() {
        let bomb = gzip(&vec![b' '; 10_000_000]);
        assert!(bomb.len() < 20_000);
        match decoded(&bomb, &[Encoding::Gzip], 4096) {
            Err(BodyError::TooLarge { limit, partial }) => {
                assert_eq!((limit, partial), (4096, bomb));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_body_not_in_its_claimed_encoding_is_kept_as_received() {
        let decoded = decoded(br#"{"id": 1}"#, &[Encoding::Gzip], 100).unwrap();
        assert_eq!(decoded, Decoded::Undecodable);
    }

    #[test]
    fn names_an_encoding_it_cannot_undo() {
        let mut headers = HeaderMap::new();
        let value = |v: &'static str| actix_web::http::header::HeaderValue::from_static(v);
        headers.append(CONTENT_ENCODING, value("gzip, identity"));
        headers.append(CONTENT_ENCODING, value("BR"));
        assert_eq!(
            encodings(&headers),
            Ok(vec![Encoding::Gzip, Encoding::Brotli])
        );
        headers.append(CONTENT_ENCODING, value("zstd"));
        assert_eq!(encodings(&headers), Err("zstd".to_owned()));
    }

    #[test]
    fn byte_order_marks_are_taken_off() {
        let text = r#"{"note": "é😀"}"#;
        let unmark = |body: Vec<u8>| without_byte_order_mark(body, 100);
        let mut utf8 = vec![0xEF, 0xBB, 0xBF];
        utf8.extend_from_slice(text.as_bytes());
        assert_eq!(unmark(utf8), text.as_bytes());
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(unmark(le), text.as_bytes());
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(unmark(be.clone()), text.as_bytes());
        // Not valid UTF-16 (odd length, a lone surrogate), or longer than the limit once
        // transcoded: kept as it came.
        assert_eq!(unmark(vec![0xFF, 0xFE, 0x41]), [0xFF, 0xFE, 0x41]);
        let lone = vec![0xFF, 0xFE, 0x00, 0xD8];
        assert_eq!(unmark(lone.clone()), lone);
        assert_eq!(without_byte_order_mark(be.clone(), 10), be);
        assert_eq!(unmark(b"{}".to_vec()), b"{}");
    }
}
