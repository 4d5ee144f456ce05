//! Who may call: tokens and scopes per organisation, loopback-only
//! service without tokens, the admin token.

use coffer::config::{Scope, TokenSettings};
use coffer::server::Server;
use coffer::server::auth::token_hash;
use coffer::{Coffer, Config, Digest};
use reqwest::StatusCode;

use super::{client, json, sqlite_server};
use crate::support::sqlite_config;

fn token(name: &str, org: &str, secret: &str, scopes: &[Scope]) -> TokenSettings {
    TokenSettings { name: name.into(), org: org.into(), sha256: token_hash(secret), scopes: scopes.to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_organisations_and_scopes_apart() {
    let s = sqlite_server(|c| {
        c.server.tokens = vec![
            token("acme-rw", "acme", "acme-secret-rw", &[Scope::Read, Scope::Write]),
            token("acme-ro", "acme", "acme-secret-ro", &[Scope::Read]),
            token("acme-wo", "acme", "acme-secret-wo", &[Scope::Write]),
            token("beta", "beta", "beta-secret", &Scope::ALL),
        ];
        c.server.admin_token_sha256 = Some(token_hash("admin-secret"));
    })
    .await;
    let c = client();
    let bytes = b"acme's file".to_vec();
    let sha = Digest::of(&bytes).to_string();
    let object = format!("{}/{sha}", s.objects("acme"));

    let r = c.put(s.objects("acme")).body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"coffer\"");
    assert_eq!(json(r).await["error"], "unauthorized");
    let r = c.put(s.objects("acme")).bearer_auth("wrong").body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.put(s.objects("acme")).bearer_auth("acme-secret-ro").body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(json(r).await["error"], "forbidden");
    let r = c.put(s.objects("acme")).bearer_auth("acme-secret-rw").body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);

    // A token that may only write learns that content is stored, not its record.
    let r = c
        .put(s.objects("acme"))
        .bearer_auth("acme-secret-wo")
        .header("x-coffer-sha256", sha.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer = json(r).await;
    assert_eq!(answer["deduplicated"], true);
    assert!(answer.get("size").is_none() && answer.get("container").is_none(), "{answer}");
    let r = c.get(&object).bearer_auth("acme-secret-wo").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.get(&object).bearer_auth("acme-secret-ro").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == bytes);
    // Another organisation's token: as if there were nothing there, for
    // an object that exists and one that does not alike.
    let missing = format!("{}/{}", s.objects("acme"), Digest::of(b"none"));
    let (a, b) = (
        c.get(&object).bearer_auth("beta-secret").send().await.unwrap(),
        c.get(&missing).bearer_auth("beta-secret").send().await.unwrap(),
    );
    assert_eq!((a.status(), b.status()), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    let (mut a, mut b) = (json(a).await, json(b).await);
    // Each answer has its own request id; the rest must be the same.
    for v in [&mut a, &mut b] {
        assert!(v.as_object_mut().unwrap().remove("request_id").is_some(), "{v}");
    }
    assert_eq!(a, b, "the answers must not tell them apart");
    for r in [
        c.get(s.objects("acme")).bearer_auth("beta-secret").send().await.unwrap(),
        c.delete(&object).bearer_auth("beta-secret").send().await.unwrap(),
        c.put(s.objects("acme")).bearer_auth("beta-secret").body("x").send().await.unwrap(),
        c.post(format!("{object}/link")).bearer_auth("beta-secret").send().await.unwrap(),
        c.get(format!("{object}/meta")).bearer_auth("beta-secret").send().await.unwrap(),
    ] {
        assert_eq!(r.status(), 404);
    }
    let r = c.delete(&object).bearer_auth("acme-secret-rw").send().await.unwrap();
    assert_eq!(r.status(), 403, "no delete scope");
    let r = c.get(&object).bearer_auth("admin-secret").send().await.unwrap();
    assert_eq!(r.status(), 403, "the admin token is not an organisation's");
    let r = c
        .put(format!("{}/v1/admin/policies/default", s.url))
        .bearer_auth("acme-secret-rw")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Operations endpoints need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = c.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert_eq!(s.coffer.list("acme", None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn without_tokens_only_loopback_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let coffer = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    let err = Server::bind(coffer.clone(), Some("0.0.0.0:0")).await.unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    assert_eq!(err.kind(), coffer::ErrorKind::Config);
    Server::bind(coffer.clone(), Some("[::1]:0"))
        .await
        .map(drop)
        .or_else(|e| {
            // A machine without IPv6 cannot bind ::1 at all; that is not the check.
            if e.to_string().contains("cannot listen") { Ok(()) } else { Err(e) }
        })
        .unwrap();

    let mut config = sqlite_config(dir.path(), &[]);
    config.server.tokens = vec![token("t", "acme", "s", &[Scope::Read])];
    let coffer = Coffer::open(config).await.unwrap();
    Server::bind(coffer, Some("0.0.0.0:0")).await.unwrap();

    // A token in clear where its hash belongs is refused at start-up.
    let mut config = sqlite_config(dir.path(), &[]);
    config.server.tokens = vec![TokenSettings { sha256: "my-token".into(), ..token("t", "acme", "s", &[Scope::Read]) }];
    assert!(Coffer::open(config).await.unwrap_err().to_string().contains("not the token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_web_pages_are_refused() {
    let s = sqlite_server(|_| {}).await;
    let r = client().put(s.objects("acme")).header("origin", "https://evil.example").body("x").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(json(r).await["error"], "forbidden");
    // DNS rebinding: the page's own host name, resolving to 127.0.0.1.
    let r = client().get(s.objects("acme")).header("host", "evil.example:8080").send().await.unwrap();
    assert_eq!(r.status(), 403);
    for host in ["localhost:1234", "127.0.0.1", "[::1]:80"] {
        let r = client().get(s.objects("acme")).header("host", host).send().await.unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    assert!(s.coffer.list("acme", None, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_swaps_policies_and_a_broken_one_is_refused() {
    let s = sqlite_server(|c| c.server.admin_token_sha256 = Some(token_hash("admin-secret"))).await;
    let c = client();
    let policies = format!("{}/v1/admin/policies", s.url);
    // A component that does not load: 422, the old policy stays.
    let r = c.put(format!("{policies}/default")).bearer_auth("admin-secret").body("garbage").send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(json(r).await["message"].as_str().unwrap().contains("the old policy stays"));
    assert_eq!(
        c.put(s.objects("trap")).body("a").send().await.unwrap().status(),
        401,
        "open access ends with a token configured"
    );
    assert!(s.coffer.put("trap", coffer::Content::from_bytes("a", None).unwrap()).await.is_ok());

    // The hostile guest (it traps for organisation "trap"), for that tenant only.
    let hostile = std::fs::read(crate::sandbox::guest("hostile")).unwrap();
    let r = c.put(format!("{policies}/trap")).bearer_auth("admin-secret").body(hostile).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["replaced"], "trap");
    assert!(s.coffer.put("trap", coffer::Content::from_bytes("b", None).unwrap()).await.is_err());
    let r = c.put(s.objects("trap")).bearer_auth("admin-secret").body("b").send().await.unwrap();
    assert_eq!(r.status(), 403, "the admin token does not store");
    assert!(s.coffer.put("acme", coffer::Content::from_bytes("b", None).unwrap()).await.is_ok());
    let r = c
        .put(format!("{policies}/trap"))
        .bearer_auth("admin-secret")
        .body(coffer::policy::DEFAULT_POLICY.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.coffer.put("trap", coffer::Content::from_bytes("c", None).unwrap()).await.is_ok());
    let r = c.put(format!("{policies}/default")).bearer_auth("wrong").body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn token_new_prints_an_entry_the_server_accepts_and_hash_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(args)
            .env_clear()
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out =
        run(&["token", "new", "--org", "acme", "--name", "bytes \"prod\" \\ 1", "--scopes", "read,link,read"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text.lines().nth(1).unwrap().trim_start_matches("# ").to_string();
    assert!(token.starts_with("coffer_"), "{text}");
    assert!(!text.lines().skip(2).any(|l| l.contains(&token)), "the entry must not hold the token: {text}");
    let file = dir.path().join("coffer.toml");
    std::fs::write(&file, &text).unwrap();
    let config = Config::from_file(&file).unwrap();
    let entry = &config.server.tokens[0];
    assert_eq!((entry.name.as_str(), entry.org.as_str()), ("bytes \"prod\" \\ 1", "acme"));
    assert_eq!(entry.scopes, vec![Scope::Read, Scope::Link]);
    assert_eq!(entry.sha256, token_hash(&token));
    config.server.validate().unwrap();
    let hashed = run(&["token", "hash"], &format!("{token}\n"));
    assert_eq!(String::from_utf8(hashed.stdout).unwrap().trim(), entry.sha256);
    let empty = run(&["token", "hash"], "");
    assert_eq!(empty.status.code(), Some(2));
    let bad = run(&["token", "new", "--org", "acme", "--name", "x", "--scopes", "admin"], "");
    assert!(!bad.status.success());
}
