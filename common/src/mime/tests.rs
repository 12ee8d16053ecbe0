use super::*;

/// Walks `raw`, wanting every leaf; returns the walk and each leaf's
/// decoded bytes.
fn walk_all(raw: &[u8]) -> (Walk, Vec<Vec<u8>>) {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let walk = extract_leaf(
        raw,
        |_| true,
        |p, chunk| {
            if bodies.len() <= p.index {
                bodies.resize(p.index + 1, Vec::new());
            }
            bodies[p.index].extend_from_slice(chunk);
        },
    )
    .expect("in memory");
    (walk, bodies)
}

#[test]
fn extract_leaf_streams_decoded_attachment() {
    let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nhello\r\n--b\r\n\
Content-Type: application/zip\r\nContent-Disposition: attachment; filename=a.zip\r\n\
Content-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n--b--\r\n";
    let (walk, bodies) = walk_all(raw);
    assert_eq!(walk.parts.len(), 2);
    assert_eq!(bodies[0], b"hello");
    assert_eq!(bodies[1], b"PK\x03\x04");
    assert_eq!(walk.parts[1].0.filename.as_deref(), Some("a.zip"));
    assert_eq!(walk.parts[1].1.sha256, crate::sha256_hex(b"PK\x03\x04"));
    assert!(walk.warnings.is_empty(), "{:?}", walk.warnings);
}
