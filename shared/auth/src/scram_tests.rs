use super::*;

fn cred(alg: ScramAlg, salt_b64: &str) -> StoredCredential {
    StoredCredential::derive_prepped(alg, "pencil", &B64.decode(salt_b64).unwrap(), 4096).unwrap()
}

#[test]
fn rfc5802_sha1_example() {
    let (mut s, user) =
        ScramServer::start(ScramAlg::Sha1, b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
    assert_eq!(user, "user");
    s.set_server_nonce("3rfcNHYJY1ZVvWVs7j");
    let c = cred(ScramAlg::Sha1, "QSXCR+Q6sek8bf92");
    assert_eq!(
        s.server_first(Some(&c)),
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    );
    let fin = s
        .client_final(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        )
        .unwrap();
    assert_eq!(fin, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

const SHA256_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SHA256_SNONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const SHA256_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const SHA256_FINAL: &[u8] =
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

fn sha256_exchange(cred: Option<&StoredCredential>) -> ScramServer {
    let (mut s, _) = ScramServer::start(ScramAlg::Sha256, SHA256_FIRST).unwrap();
    s.set_server_nonce(SHA256_SNONCE);
    s.server_first(cred);
    s
}

#[test]
fn rfc7677_sha256_example() {
    let (mut s, _) = ScramServer::start(ScramAlg::Sha256, SHA256_FIRST).unwrap();
    s.set_server_nonce(SHA256_SNONCE);
    let c = cred(ScramAlg::Sha256, SHA256_SALT);
    assert_eq!(
        s.server_first(Some(&c)),
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    assert_eq!(
        s.client_final(SHA256_FINAL).unwrap(),
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn wrong_password_is_not_authorized() {
    let other = StoredCredential::derive_prepped(
        ScramAlg::Sha256,
        "pen",
        &B64.decode(SHA256_SALT).unwrap(),
        4096,
    )
    .unwrap();
    let err = sha256_exchange(Some(&other))
        .client_final(SHA256_FINAL)
        .unwrap_err();
    assert!(matches!(err, SaslError::NotAuthorized));
    assert_eq!(err.condition(), "not-authorized");
}

#[test]
fn tampered_proof_is_not_authorized() {
    let c = cred(ScramAlg::Sha256, SHA256_SALT);
    let bad = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert!(matches!(
        sha256_exchange(Some(&c)).client_final(bad),
        Err(SaslError::NotAuthorized)
    ));
    let short = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA";
    assert!(matches!(
        sha256_exchange(Some(&c)).client_final(short),
        Err(SaslError::NotAuthorized)
    ));
}

#[test]
fn unknown_user_gets_stable_fake_salt_then_fails() {
    let first = |secret: &[u8]| {
        let (mut s, _) = ScramServer::start(ScramAlg::Sha256, SHA256_FIRST).unwrap();
        s.set_fake_salt_secret(secret);
        let msg = String::from_utf8(s.server_first(None)).unwrap();
        msg.split(',').nth(1).unwrap().to_owned()
    };
    assert_eq!(first(b"k"), first(b"k"));
    assert_ne!(first(b"k"), first(b"other"));
    assert!(first(b"k").starts_with("s="));
    let err = sha256_exchange(None)
        .client_final(SHA256_FINAL)
        .unwrap_err();
    assert!(matches!(err, SaslError::NotAuthorized));
}

#[test]
fn gs2_header_variants() {
    let (_, u) = ScramServer::start(ScramAlg::Sha1, b"y,,n=user,r=abc").unwrap();
    assert_eq!(u, "user");
    let (s, u) = ScramServer::start(ScramAlg::Sha1, b"n,a=user,n=user,r=abc").unwrap();
    assert_eq!((u.as_str(), s.authzid()), ("user", Some("user")));
    assert!(ScramServer::start(ScramAlg::Sha1, b"n,a=user@example.com,n=user,r=abc").is_ok());
    let e = ScramServer::start(ScramAlg::Sha1, b"n,a=admin,n=user,r=abc")
        .err()
        .unwrap();
    assert!(matches!(e, SaslError::InvalidAuthzid));
    assert_eq!(e.condition(), "invalid-authzid");
    let e = ScramServer::start(ScramAlg::Sha1, b"n,a=admin@example.com,n=user,r=abc")
        .err()
        .unwrap();
    assert!(matches!(e, SaslError::InvalidAuthzid));
    let e = ScramServer::start(ScramAlg::Sha1, b"p=tls-unique,,n=user,r=abc")
        .err()
        .unwrap();
    assert_eq!(e.condition(), "malformed-request");
}

#[test]
fn y_flag_must_be_echoed() {
    let (mut s, _) =
        ScramServer::start(ScramAlg::Sha256, b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
    s.set_server_nonce(SHA256_SNONCE);
    s.server_first(Some(&cred(ScramAlg::Sha256, SHA256_SALT)));
    // The client echoes "n,," (biws) although it sent "y,,": a downgrade signal, rejected.
    assert!(matches!(
        s.client_final(SHA256_FINAL),
        Err(SaslError::MalformedRequest(_))
    ));
}

#[test]
fn escaped_usernames_are_decoded() {
    let (_, u) = ScramServer::start(ScramAlg::Sha1, b"n,,n=a=2Cb=3Dc,r=abc").unwrap();
    assert_eq!(u, "a,b=c");
}

#[test]
fn malformed_client_first() {
    for bad in [
        &b""[..],
        b"n",
        b"n,,",
        b"x,,n=user,r=abc",
        b"n,,r=abc",
        b"n,,n=user",
        b"n,,n=user,r=",
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=us=41er,r=abc",
        b"n,,n=,r=abc",
        b"n,b=x,n=user,r=abc",
        b"n,,n=user,r=a\x01b",
        b"n,,n=\xff,r=abc",
    ] {
        match ScramServer::start(ScramAlg::Sha1, bad) {
            Err(e) => assert_eq!(
                e.condition(),
                "malformed-request",
                "{:?}",
                String::from_utf8_lossy(bad)
            ),
            Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(bad)),
        }
    }
}

#[test]
fn malformed_client_final() {
    let c = cred(ScramAlg::Sha256, SHA256_SALT);
    let n = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    for bad in [
        String::new(),
        format!("c=biws,r={n}"),
        format!("r={n},p=AAAA"),
        "c=biws,r=wrongnonce,p=AAAA".to_owned(),
        format!("c=eSws,r={n},p=AAAA"),
        format!("c=biws,r={n},p=!!notbase64"),
        format!("c=biws,r={n},p=AAAA,x=1"),
    ] {
        match sha256_exchange(Some(&c)).client_final(bad.as_bytes()) {
            Err(e) => assert_eq!(e.condition(), "malformed-request", "{bad}"),
            Ok(_) => panic!("accepted {bad}"),
        }
    }
}

#[test]
fn client_final_before_server_first_fails() {
    let (s, _) = ScramServer::start(ScramAlg::Sha256, SHA256_FIRST).unwrap();
    assert!(s.client_final(SHA256_FINAL).is_err());
}

#[test]
fn full_exchange_against_derived_credentials() {
    // A client computed by hand with the same primitives, so the random-salt path is exercised.
    let creds = Credentials::derive("sécret", 64).unwrap();
    for alg in [ScramAlg::Sha1, ScramAlg::Sha256] {
        let (mut s, _) = ScramServer::start(alg, b"n,,n=bob,r=clientnonce").unwrap();
        let sf = String::from_utf8(s.server_first(Some(creds.get(alg)))).unwrap();
        let nonce = sf
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("r=")
            .unwrap()
            .to_owned();
        let stored = creds.get(alg);
        let salted = match alg {
            ScramAlg::Sha1 => {
                let mut o = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<sha1::Sha1>(
                    "sécret".as_bytes(),
                    &stored.salt,
                    stored.iterations,
                    &mut o,
                );
                o.to_vec()
            }
            ScramAlg::Sha256 => {
                let mut o = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                    "sécret".as_bytes(),
                    &stored.salt,
                    stored.iterations,
                    &mut o,
                );
                o.to_vec()
            }
        };
        let client_key = alg.hmac(&salted, &[b"Client Key"]);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("n=bob,r=clientnonce,{sf},{without_proof}");
        let sig = alg.hmac(&alg.hash(&client_key), &[auth.as_bytes()]);
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let fin = s
            .client_final(format!("{without_proof},p={}", B64.encode(proof)).as_bytes())
            .unwrap();
        let server_key = alg.hmac(&salted, &[b"Server Key"]);
        assert_eq!(
            fin,
            format!(
                "v={}",
                B64.encode(alg.hmac(&server_key, &[auth.as_bytes()]))
            )
            .into_bytes()
        );
    }
}
