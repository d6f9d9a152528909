//! Connection limits as an attacker or a broken client meets them: half-sent
//! request heads and idle keep-alive connections are closed after
//! `http.header_read_timeout`, a stalled body or an unread answer after
//! `http.idle_timeout`, and past `http.max_connections` a new connection is
//! answered 503; all the while ordinary requests are answered, and an event
//! stream with nothing to say stays open.

mod common;

use common::{Backend, TestServer, counter};
use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn host(s: &TestServer) -> String {
    s.url.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (EOF or reset), for at most
/// `limit`; the bytes read, or `None` if it was still open.
async fn read_to_close(conn: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// 2,000 connections that send half a request head (half of them a `GET`
/// of a boot file, which the front reads; half a `POST`, which hyper reads)
/// and one kept-alive connection left idle: all are closed once the
/// header-read timeout has passed, while ordinary requests keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_connections_are_closed() {
    let Some(s) = TestServer::start(Backend::Sqlite, |c| {
        c.http.header_read_timeout = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    std::fs::create_dir_all(&s.cfg.boot.assets_dir).unwrap();
    std::fs::write(s.cfg.boot.assets_dir.join("x.img"), b"boot file").unwrap();
    let addr = host(&s);
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..2000 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let head: &[u8] = if i % 2 == 0 {
            b"GET /assets/x.img HTTP/1.1\r\nHost: a\r\n"
        } else {
            b"POST /v1/nodes HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
        };
        c.write_all(head).await.unwrap();
        slow.push(c);
    }
    // A kept-alive connection after one answered request.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 4096];
    let n = idle.read(&mut first).await.unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    eprintln!("2,000 slow connections opened in {:?}", started.elapsed());
    // Ordinary requests are answered while the slow connections are open.
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let r = http
            .get(format!("{}/assets/x.img", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"boot file");
        let (st, _) = s.get("/v1/nodes").await;
        assert_eq!(st, 200);
    }
    let mut open = 0;
    for c in slow.iter_mut() {
        if read_to_close(c, Duration::from_secs(30)).await.is_none() {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "{open} of 2,000 half-sent heads still open long after the 2 s header-read timeout"
    );
    let rest = read_to_close(&mut idle, Duration::from_secs(30)).await;
    assert!(
        rest.is_some_and(|r| r.is_empty()),
        "an idle kept-alive connection stayed open"
    );
    eprintln!("all closed {:?} after the first", started.elapsed());
    let m = s.metrics().await;
    assert!(
        counter(&m, "racklift_http_header_timeouts_total") >= 2000,
        "{m}"
    );
    s.finish().await;
}

/// A body the client stops sending and an answer it stops reading (one sent
/// by the front with sendfile, one by the router) are cut after the idle
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_and_unread_answers_are_cut() {
    let Some(s) = TestServer::start(Backend::Sqlite, |c| {
        c.http.idle_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let addr = host(&s);
    // A body announced as 1,000 bytes of which 10 come.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/nodes HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\": ",
        s.token
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut c, Duration::from_secs(20))
        .await
        .expect("a connection with a stalled body was never closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "a stalled body got: {answer}"
    );
    let (_, nodes) = s.get("/v1/nodes").await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 0);

    // 256 MiB that nobody reads, from the front and from the router.
    let size: u64 = 256 << 20;
    std::fs::create_dir_all(&s.cfg.boot.assets_dir).unwrap();
    let f = std::fs::File::create(s.cfg.boot.assets_dir.join("big.img")).unwrap();
    f.set_len(size).unwrap();
    for extra in ["", "If-None-Match: \"not-this\"\r\n"] {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(format!("GET /assets/big.img HTTP/1.1\r\nHost: a\r\n{extra}\r\n").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let got = read_to_close(&mut c, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("an unread download ({extra:?}) was never cut"));
        assert!(
            (got.len() as u64) < size,
            "an unread download ({extra:?}) was sent whole"
        );
    }
    let m = s.metrics().await;
    assert!(counter(&m, "racklift_http_idle_timeouts_total") >= 3, "{m}");
    s.finish().await;
}

/// An event stream with nothing to say outlives both timeouts and still
/// carries the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_outlive_the_timeouts() {
    let Some(s) = TestServer::start(Backend::Sqlite, |c| {
        c.http.idle_timeout = Duration::from_secs(1);
        c.http.header_read_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let resp = s.event_stream(None).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.create(json!({"name": "late", "boot_mac": "52:54:00:00:0a:01",
        "bmc": {"driver": "fake", "address": "bmc-late", "username": "a", "password": "p"}}))
        .await;
    let mut text = String::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(
                &chunk.expect("the stream was cut"),
            ));
            if text.contains("\"kind\":\"created\"") {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "the stream never carried the event: {text}");
    s.finish().await;
}

/// Past `http.max_connections` a new connection is answered 503 and closed,
/// counted, and once connections close, new ones are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused() {
    let Some(s) = TestServer::start(Backend::Sqlite, |c| {
        c.http.max_connections = 16;
    })
    .await
    else {
        return;
    };
    let addr = host(&s);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let answer = read_to_close(&mut extra, Duration::from_secs(10))
        .await
        .expect("a connection past the cap was kept open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("too_many_connections"),
        "past the cap: {answer}"
    );
    drop(held);
    // The closed connections are noticed and new ones served.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let r = s
            .http
            .get(format!("{}/metrics", s.url))
            .bearer_auth(&s.token)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => break r.text().await.unwrap(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("no connection served after the others closed: {other:?}"),
        }
    };
    assert!(
        counter(&metrics, "racklift_http_connections_refused_total") >= 1,
        "{metrics}"
    );
    s.finish().await;
}
