//! The few protobuf request bodies the simulator must read.
//!
//! kubectl's typed clients send `application/vnd.kubernetes.protobuf` for
//! built-in kinds (`kubectl auth can-i` posts a SelfSubjectAccessReview so),
//! and kubectl up to 1.31 has no JSON fallback on 415. The simulator answers
//! in JSON (clients accept it) but must decode these bodies: the envelope
//! (`k8s\0` + `runtime.Unknown`) and the access-review messages of
//! `k8s.io/api/authorization/v1/generated.proto`, into their JSON shape.
//! Only the protobuf wire format's varint and length-delimited fields occur.

use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("missing the k8s protobuf envelope")]
    NoEnvelope,
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("protobuf bodies of kind {0:?} are not supported by the simulator")]
    Unsupported(String),
}

enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
}

/// Iterates over (field number, value) pairs of one message.
fn fields(mut data: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtobufError> {
    fn varint(data: &mut &[u8]) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = data.split_first().ok_or(ProtobufError::Malformed)?;
            *data = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed)
    }
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = varint(&mut data)?;
        let (number, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                varint(&mut data)?;
                out.push((number, Field::Varint));
            }
            2 => {
                let len =
                    usize::try_from(varint(&mut data)?).map_err(|_| ProtobufError::Malformed)?;
                if len > data.len() {
                    return Err(ProtobufError::Malformed);
                }
                let (bytes, rest) = data.split_at(len);
                out.push((number, Field::Bytes(bytes)));
                data = rest;
            }
            // 64- and 32-bit fixed fields do not occur in these messages.
            1 if data.len() >= 8 => data = &data[8..],
            5 if data.len() >= 4 => data = &data[4..],
            _ => return Err(ProtobufError::Malformed),
        }
    }
    Ok(out)
}

fn string_fields(data: &[u8], names: &[(u64, &str)]) -> Result<Map<String, Value>, ProtobufError> {
    let mut map = Map::new();
    for (number, field) in fields(data)? {
        if let (Some((_, name)), Field::Bytes(bytes)) =
            (names.iter().find(|(n, _)| *n == number), field)
        {
            map.insert((*name).into(), json!(String::from_utf8_lossy(bytes)));
        }
    }
    Ok(map)
}

const RESOURCE_ATTRIBUTES: &[(u64, &str)] = &[
    (1, "namespace"),
    (2, "verb"),
    (3, "group"),
    (4, "version"),
    (5, "resource"),
    (6, "subresource"),
    (7, "name"),
];
const NON_RESOURCE_ATTRIBUTES: &[(u64, &str)] = &[(1, "path"), (2, "verb")];

/// SubjectAccessReviewSpec: resourceAttributes=1, nonResourceAttributes=2,
/// user=3, groups=4 (repeated); SelfSubjectAccessReviewSpec has only 1 and 2.
fn review_spec(data: &[u8]) -> Result<Value, ProtobufError> {
    let mut spec = Map::new();
    let mut groups = Vec::new();
    for (number, field) in fields(data)? {
        match (number, field) {
            (1, Field::Bytes(b)) => {
                spec.insert(
                    "resourceAttributes".into(),
                    Value::Object(string_fields(b, RESOURCE_ATTRIBUTES)?),
                );
            }
            (2, Field::Bytes(b)) => {
                spec.insert(
                    "nonResourceAttributes".into(),
                    Value::Object(string_fields(b, NON_RESOURCE_ATTRIBUTES)?),
                );
            }
            (3, Field::Bytes(b)) => {
                spec.insert("user".into(), json!(String::from_utf8_lossy(b)));
            }
            (4, Field::Bytes(b)) => groups.push(json!(String::from_utf8_lossy(b))),
            _ => {}
        }
    }
    if !groups.is_empty() {
        spec.insert("groups".into(), Value::Array(groups));
    }
    Ok(Value::Object(spec))
}

/// Decodes an access review posted as protobuf into its JSON form.
pub fn decode_review(body: &[u8]) -> Result<Value, ProtobufError> {
    let unknown = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoEnvelope)?;
    let mut kind = String::new();
    let mut api_version = String::new();
    let mut raw: &[u8] = &[];
    for (number, field) in fields(unknown)? {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                let meta = string_fields(type_meta, &[(1, "apiVersion"), (2, "kind")])?;
                api_version = meta
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into();
                kind = meta
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into();
            }
            (2, Field::Bytes(bytes)) => raw = bytes,
            _ => {}
        }
    }
    if kind != "SelfSubjectAccessReview" && kind != "SubjectAccessReview" {
        return Err(ProtobufError::Unsupported(kind));
    }
    let mut spec = json!({});
    for (number, field) in fields(raw)? {
        if let (2, Field::Bytes(bytes)) = (number, field) {
            spec = review_spec(bytes)?;
        }
    }
    Ok(json!({"apiVersion": api_version, "kind": kind, "metadata": {}, "spec": spec}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_field(number: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, data.len() as u8];
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn decodes_self_subject_access_review() {
        let attributes = [
            bytes_field(1, b"default"),
            bytes_field(2, b"create"),
            bytes_field(5, b"pods"),
            bytes_field(6, b"exec"),
        ]
        .concat();
        let spec = bytes_field(1, &attributes);
        let review = [bytes_field(1, &[]), bytes_field(2, &spec)].concat();
        let type_meta = [
            bytes_field(1, b"authorization.k8s.io/v1"),
            bytes_field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, &review),
        ]
        .concat();
        let json = decode_review(&body).unwrap();
        assert_eq!(json["kind"], "SelfSubjectAccessReview");
        assert_eq!(json["spec"]["resourceAttributes"]["subresource"], "exec");
        assert_eq!(json["spec"]["resourceAttributes"]["namespace"], "default");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(decode_review(b"nope"), Err(ProtobufError::NoEnvelope));
        assert_eq!(
            decode_review(b"k8s\0\x0a\xff"),
            Err(ProtobufError::Malformed)
        );
        for len in 0..64u8 {
            let junk: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(len))
                .collect();
            let _ = decode_review(&[MAGIC, &junk].concat());
        }
    }
}
