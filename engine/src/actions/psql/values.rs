//! Values across the wire: JSON parameters sent in PostgreSQL's text form (so any parameter type works
//! and the server does the parsing), and result cells decoded from the binary form into typed JSON.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type};
use serde_json::{Value, json};

type BoxError = Box<dyn Error + Sync + Send>;

/// A JSON value bound to a `$n` parameter.
#[derive(Debug)]
pub struct Param(pub Value);

/// A PostgreSQL array literal (`{…}`) of JSON values, each element quoted.
fn array_literal(items: &[Value]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|v| match v {
            Value::Null => "NULL".to_owned(),
            Value::Array(a) => array_literal(a),
            other => {
                let s = text_of(other);
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let text = match (&self.0, ty.kind()) {
            (Value::Null, _) => return Ok(IsNull::Yes),
            (Value::Array(items), Kind::Array(_)) => array_literal(items),
            (v, _) => text_of(v),
        };
        out.put_slice(text.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.to_sql(ty, out)
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }
}

/// One result cell, as typed JSON.
#[derive(Debug)]
pub struct Cell(pub Value);

fn be<const N: usize>(raw: &[u8]) -> Result<[u8; N], BoxError> {
    raw.get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| "a short value".into())
}

/// The bytes of `raw` from `i` on (none past its end, so a short value is an error, not a panic).
fn at(raw: &[u8], i: usize) -> &[u8] {
    raw.get(i..).unwrap_or_default()
}

/// `numeric` in its binary form: digit count, weight, sign, scale, then base-10000 digits.
fn numeric(raw: &[u8]) -> Result<String, BoxError> {
    let n = i16::from_be_bytes(be(raw)?).max(0) as usize;
    let weight = i16::from_be_bytes(be(at(raw, 2))?);
    let sign = u16::from_be_bytes(be(at(raw, 4))?);
    let scale = u16::from_be_bytes(be(at(raw, 6))?) as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(n.min(raw.len() / 2));
    for i in 0..n {
        digits.push(i16::from_be_bytes(be(at(raw, 8 + 2 * i))?));
    }
    let mut int = String::new();
    let mut frac = String::new();
    // digit i stands for 10000^(weight - i)
    let last = i32::from(weight).max(n as i32 - 1);
    for i in 0..=last.max(0) {
        let d = digits.get(i as usize).copied().unwrap_or(0);
        let pos = i32::from(weight) - i;
        if pos >= 0 {
            if int.is_empty() {
                if d != 0 {
                    int = d.to_string();
                }
            } else {
                int.push_str(&format!("{d:04}"));
            }
        } else {
            frac.push_str(&format!("{d:04}"));
        }
    }
    // leading fractional groups before the first digit (weight < -1)
    if weight < -1 {
        frac = "0000".repeat((-weight - 1) as usize) + &frac;
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac: String = frac.chars().take(scale).collect();
    while frac.len() < scale {
        frac.push('0');
    }
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if scale > 0 {
        format!("{sign}{int}.{frac}")
    } else {
        format!("{sign}{int}")
    })
}

const PG_EPOCH_DAYS: i64 = 10_957; // 2000-01-01 in days since 1970-01-01

fn date(days: i32) -> String {
    chrono::DateTime::from_timestamp((i64::from(days) + PG_EPOCH_DAYS) * 86_400, 0)
        .map_or_else(|| days.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

fn timestamp(us: i64, zone: bool) -> String {
    let secs = us.div_euclid(1_000_000) + PG_EPOCH_DAYS * 86_400;
    let nanos = (us.rem_euclid(1_000_000) * 1000) as u32;
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) if zone => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        Some(t) => t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
        None => us.to_string(),
    }
}

fn hex(raw: &[u8]) -> String {
    dsl::analyze::hex(raw)
}

/// A value of type `ty` from its binary form.
fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    Ok(match *ty {
        Type::BOOL => json!(raw.first() == Some(&1)),
        Type::INT2 => json!(i16::from_be_bytes(be(raw)?)),
        Type::INT4 => json!(i32::from_be_bytes(be(raw)?)),
        Type::INT8 => json!(i64::from_be_bytes(be(raw)?)),
        Type::OID => json!(u32::from_be_bytes(be(raw)?)),
        Type::FLOAT4 => json!(f32::from_be_bytes(be(raw)?)),
        Type::FLOAT8 => json!(f64::from_be_bytes(be(raw)?)),
        Type::NUMERIC => json!(numeric(raw)?),
        Type::JSON => serde_json::from_slice(raw)?,
        Type::JSONB => serde_json::from_slice(raw.get(1..).unwrap_or_default())?,
        Type::UUID => {
            let h = hex(raw);
            if h.len() == 32 {
                json!(format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                ))
            } else {
                json!(h)
            }
        }
        Type::DATE => json!(date(i32::from_be_bytes(be(raw)?))),
        Type::TIMESTAMP => json!(timestamp(i64::from_be_bytes(be(raw)?), false)),
        Type::TIMESTAMPTZ => json!(timestamp(i64::from_be_bytes(be(raw)?), true)),
        Type::BYTEA => json!(format!("\\x{}", hex(raw))),
        _ => match ty.kind() {
            Kind::Array(elem) => array(elem, raw)?,
            Kind::Enum(_) | Kind::Domain(_) => json!(String::from_utf8_lossy(raw)),
            // text, varchar, char, name, citext, unknown and anything else sent as text
            _ => match std::str::from_utf8(raw) {
                Ok(s) if is_textual(ty) => json!(s),
                _ => json!({"type": ty.name(), "hex": hex(raw)}),
            },
        },
    })
}

fn is_textual(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::CHAR
    ) || ty.name() == "citext"
}

/// The binary array form: dimensions, a null flag, the element type, each dimension's size and lower
/// bound, then each element with its length (-1 for NULL).
fn array(elem: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    let ndim = i32::from_be_bytes(be(raw)?);
    if ndim == 0 {
        return Ok(json!([]));
    }
    // PostgreSQL arrays have at most 6 dimensions; every element takes at least 4 bytes
    if !(1..=6).contains(&ndim) {
        return Err(format!("an array with {ndim} dimensions").into());
    }
    let ndim = ndim as usize;
    let mut dims = Vec::with_capacity(ndim);
    for d in 0..ndim {
        dims.push(i32::from_be_bytes(be(at(raw, 12 + 8 * d))?).max(0) as usize);
    }
    let mut pos = 12 + 8 * ndim;
    let total = dims
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .filter(|t| t.saturating_mul(4) <= raw.len())
        .ok_or("an array larger than its bytes")?;
    let mut flat = Vec::with_capacity(total);
    for _ in 0..total {
        let len = i32::from_be_bytes(be(at(raw, pos))?);
        pos += 4;
        if len < 0 {
            flat.push(Value::Null);
        } else {
            let end = pos + len as usize;
            flat.push(decode(elem, raw.get(pos..end).ok_or("a short array")?)?);
            pos = end;
        }
    }
    // fold the flat list into nested arrays, innermost dimension first
    for &d in dims.iter().skip(1).rev() {
        flat = flat
            .chunks(d.max(1))
            .map(|c| Value::Array(c.to_vec()))
            .collect();
    }
    Ok(Value::Array(flat))
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        decode(ty, raw).map(Cell)
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(n: i16, weight: i16, sign: u16, scale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [n, weight] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&scale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_decode_exactly() {
        // 12345.678 = [1, 2345, 6780], weight 1, scale 3
        assert_eq!(
            numeric(&num(3, 1, 0, 3, &[1, 2345, 6780])).ok().as_deref(),
            Some("12345.678")
        );
        // -0.0042 = [42], weight -1, scale 4
        assert_eq!(
            numeric(&num(1, -1, 0x4000, 4, &[42])).ok().as_deref(),
            Some("-0.0042")
        );
        // 0.00000001 = [1], weight -2, scale 8
        assert_eq!(
            numeric(&num(1, -2, 0, 8, &[1])).ok().as_deref(),
            Some("0.00000001")
        );
        // 10000 = [1], weight 1, scale 0
        assert_eq!(
            numeric(&num(1, 1, 0, 0, &[1])).ok().as_deref(),
            Some("10000")
        );
        assert_eq!(numeric(&num(0, 0, 0, 2, &[])).ok().as_deref(), Some("0.00"));
    }

    #[test]
    fn a_malformed_value_is_an_error_not_a_panic() {
        let header = |ndim: i32, dim: i32| {
            let mut v = Vec::new();
            for x in [ndim, 0, 23, dim, 1] {
                v.extend_from_slice(&x.to_be_bytes());
            }
            v
        };
        assert!(
            array(&Type::INT4, &header(100, 1)).is_err(),
            "too many dimensions"
        );
        assert!(
            array(&Type::INT4, &header(1, i32::MAX)).is_err(),
            "more elements than bytes"
        );
        assert!(
            array(&Type::INT4, &header(1, 2)).is_err(),
            "elements missing"
        );
        assert!(numeric(&[0, 1]).is_err());
        assert!(decode(&Type::INT8, &[1, 2, 3]).is_err());
    }

    #[test]
    fn dates_and_times_count_from_2000() {
        assert_eq!(date(0), "2000-01-01");
        assert_eq!(date(-1), "1999-12-31");
        assert_eq!(timestamp(1_500_000, true), "2000-01-01T00:00:01.500Z");
        assert_eq!(
            array_literal(&[json!("a\"b"), Value::Null, json!(3)]),
            r#"{"a\"b",NULL,"3"}"#
        );
    }
}
