//! Kafka keys and values as records, and records as keys and values.

use sluice_abi::Value;

use super::config::Format;

/// The value `bytes` holds in `format`; a missing payload (a tombstone, or no key) is
/// null. The error says what is wrong, for a message that names the record.
pub fn decode(bytes: Option<&[u8]>, format: Format) -> Result<Value, String> {
    let Some(bytes) = bytes else {
        return Ok(Value::Null);
    };
    match format {
        Format::Bytes => Ok(Value::Bytes(bytes.to_vec())),
        Format::String => std::str::from_utf8(bytes)
            .map(|text| Value::String(text.to_owned()))
            .map_err(|error| format!("is not UTF-8 ({error})")),
        Format::Json => {
            let text =
                std::str::from_utf8(bytes).map_err(|error| format!("is not UTF-8 ({error})"))?;
            crate::json::parse(text).map_err(|error| format!("is not JSON ({error})"))
        }
    }
}

/// `value` as Kafka bytes in `format`: null as no payload; in `string`, a string as its
/// text and anything else as JSON; in `json`, typed JSON.
pub fn encode(value: &Value, format: Format) -> Option<Vec<u8>> {
    match (value, format) {
        (Value::Null, _) => None,
        (Value::Bytes(bytes), Format::Bytes) => Some(bytes.clone()),
        (Value::String(text), Format::String | Format::Bytes) => Some(text.as_bytes().to_vec()),
        (value, Format::String | Format::Bytes) => Some(value.to_display_text().into_bytes()),
        (value, Format::Json) => Some(crate::json::to_json(value).into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_decode_in_each_format_and_bad_ones_say_why() {
        assert_eq!(decode(None, Format::Json), Ok(Value::Null));
        assert_eq!(
            decode(Some(b"hi"), Format::String),
            Ok(Value::String("hi".into()))
        );
        assert_eq!(
            decode(Some(&[0xff]), Format::Bytes),
            Ok(Value::Bytes(vec![0xff]))
        );
        assert_eq!(
            decode(Some(b"[1, \"a\"]"), Format::Json),
            Ok(Value::List(vec![Value::Int(1), Value::String("a".into())]))
        );
        assert!(
            decode(Some(&[0xff]), Format::String)
                .unwrap_err()
                .contains("not UTF-8")
        );
        assert!(
            decode(Some(b"{"), Format::Json)
                .unwrap_err()
                .contains("not JSON")
        );
    }

    #[test]
    fn records_encode_back_to_what_decodes_them() {
        let value = Value::Tuple(vec![Value::String("a".into()), Value::Int(2)]);
        let bytes = encode(&value, Format::Json).unwrap();
        assert_eq!(decode(Some(&bytes), Format::Json), Ok(value));
        assert_eq!(encode(&Value::Int(3), Format::String).unwrap(), b"3");
        assert_eq!(encode(&Value::Null, Format::String), None);
    }
}
