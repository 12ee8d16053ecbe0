use super::*;
use crate::analysis::read::walk_all;

fn sample(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/smime")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn smime_and_pgp_are_told_apart() {
    let pgp_mime = b"From: a@b.example\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=B\r\n\r\n--B\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n--B--\r\n".to_vec();
    let pgp_signed = b"From: a@b.example\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\niQEz\r\n-----END PGP SIGNATURE-----\r\n--B--\r\n".to_vec();
    let plain = b"From: a@b.example\r\nSubject: x\r\n\r\nhello\r\n".to_vec();
    // (what, raw message, body text, tags, signer)
    type Case<'a> = (&'a str, Vec<u8>, &'a str, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "detached S/MIME",
            sample("signed.eml"),
            "",
            vec![SMIME_SIGNED],
            "Alice Example <alice@corp.example>",
        ),
        (
            "opaque S/MIME",
            sample("opaque-signed.eml"),
            "",
            vec![SMIME_SIGNED],
            "Alice Example <alice@corp.example>",
        ),
        (
            "S/MIME encrypted",
            sample("encrypted.eml"),
            "",
            vec![SMIME_ENCRYPTED],
            "",
        ),
        ("PGP/MIME encrypted", pgp_mime, "", vec![PGP_ENCRYPTED], ""),
        ("PGP/MIME signed", pgp_signed, "", vec![PGP_SIGNED], ""),
        (
            "inline PGP",
            plain.clone(),
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nhi\n",
            vec![PGP_SIGNED],
            "",
        ),
        ("plain", plain, "hello", vec![], ""),
    ];
    for (what, raw, body, tags, signer) in cases {
        let c = classify(&walk_all(&raw, 1 << 20), body);
        assert_eq!(c.tags, tags, "{what}");
        assert_eq!(c.signer, signer, "{what}");
    }
}

#[test]
fn enveloped_data_without_smime_type_is_read_from_the_bytes() {
    let raw = String::from_utf8(sample("encrypted.eml"))
        .expect("ascii")
        .replace(" smime-type=enveloped-data;", "");
    let c = classify(&walk_all(raw.as_bytes(), 1 << 20), "");
    assert_eq!(c.tags, vec![SMIME_ENCRYPTED]);
}
