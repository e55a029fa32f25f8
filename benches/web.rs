//! The web terminal's benchmark rows, measured with a Rust WebSocket client
//! (not a browser) against `kbastion serve` and the simulator, side by
//! side with the SSH path in the same run:
//!
//! - download through a terminal: `head -c N /dev/zero` in a pty, through
//!   the web terminal's WebSocket and through `ssh -tt`;
//! - keystroke round trip (one byte to `cat` in raw mode and back), web and
//!   `kubectl exec -t` straight to the simulator;
//! - a stalled tab: the bastion's RSS growth while a tab acknowledges
//!   nothing and the command keeps printing.
//!
//!     cargo bench --bench web
//!
//! KB_BENCH_BYTES (default 256 MiB), KB_BENCH_ROUNDS (keystrokes, default
//! 2000). Prints a table and writes target/bench/web.json.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kbastion::web::wire::{ClientMessage, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

use common::*;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Accepts the bench's own self-signed certificate (it is on loopback).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// One web terminal, as a page would drive it.
struct Terminal {
    socket: Socket,
    /// Offset after the last output byte received.
    received: u64,
    acked: u64,
    /// Whether to acknowledge output (a stalled tab does not).
    ack: bool,
}

impl Terminal {
    /// A terminal on a new socket, its size sent (the session starts).
    async fn open(port: u16, cookie: &str, target: &str) -> Terminal {
        let mut terminal = Terminal::connect(port, cookie, target).await;
        terminal
            .send(ClientMessage::Resize {
                cols: 200,
                rows: 50,
            })
            .await;
        terminal
    }

    async fn connect(port: u16, cookie: &str, target: &str) -> Terminal {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let request = http::Request::builder()
            .uri(format!("wss://127.0.0.1:{port}/ws/{target}"))
            .header("Host", format!("127.0.0.1:{port}"))
            .header("Origin", format!("https://127.0.0.1:{port}"))
            .header("Cookie", format!("__Host-kbastion={cookie}"))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header(
                "Sec-WebSocket-Key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .body(())
            .unwrap();
        let (socket, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
        Terminal {
            socket,
            received: 0,
            acked: 0,
            ack: true,
        }
    }

    async fn send(&mut self, message: ClientMessage) {
        if let Err(error) = self.socket.send(Message::Binary(message.encode())).await {
            // What the bastion said before it closed, for the failure.
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(1), self.socket.next()).await
            {
                eprintln!("web: the bastion sent {message:?}");
            }
            panic!("web: sending failed: {error}");
        }
    }

    /// The next output (None at the exit or the end), acknowledged as a
    /// page does once it has drawn it.
    async fn output(&mut self) -> Option<Bytes> {
        loop {
            let message = match self.socket.next().await? {
                Ok(Message::Binary(frame)) => ServerMessage::decode(frame).unwrap(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            };
            match message {
                ServerMessage::Output { offset, data } => {
                    self.received = offset + data.len() as u64;
                    if self.ack && self.received - self.acked >= 64 * 1024 {
                        self.acked = self.received;
                        // After the exit the bastion has closed the socket
                        // while output is still being read here: an ack
                        // that finds it closed is not an error.
                        let ack = ClientMessage::Ack(self.received).encode();
                        let _ = self.socket.send(Message::Binary(ack)).await;
                    }
                    return Some(data);
                }
                ServerMessage::Exit(_) => return None,
                ServerMessage::Ping => self.send(ClientMessage::Keepalive).await,
                _ => {}
            }
        }
    }

    async fn wait_for(&mut self, needle: &[u8]) {
        let mut seen = Vec::new();
        while !seen.windows(needle.len()).any(|w| w == needle) {
            let data = self.output().await.expect("output");
            seen.extend_from_slice(&data);
            let keep = seen.len().saturating_sub(4096);
            seen.drain(..keep);
        }
    }

    async fn type_line(&mut self, line: &str) {
        self.send(ClientMessage::Input(Bytes::from(format!("{line}\r"))))
            .await;
    }
}

fn main() {
    let bytes = env_number("KB_BENCH_BYTES", 256 << 20);
    let rounds = env_number("KB_BENCH_ROUNDS", 2000) as usize;
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut record = |metric: &str, path: &str, value: f64, unit: &str| {
        println!("{metric:<44} {path:<14} {value:>12.2} {unit}");
        rows.push(
            serde_json::json!({"metric": metric, "path": path, "value": value, "unit": unit}),
        );
    };
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), pair.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let bastion = Bastion::start(
        &sim,
        &format!(
            "[timeouts]\nidle_secs = 0\n[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"https://127.0.0.1:{port}\"\ncertificate = \"{}\"\nkey = \"{}\"\nreattach_secs = 1\n",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display()
        ),
    );
    let cookie = || {
        let out = bastion.ssh("alice", &["web"], b"");
        let link = text(&out.stdout).lines().next().unwrap().to_string();
        let out = Command::new("curl")
            .args([
                "-sk",
                "-X",
                "POST",
                "-H",
                &format!("Origin: https://127.0.0.1:{port}"),
                "-o",
                "/dev/null",
                "-D",
                "-",
                &link,
            ])
            .output()
            .unwrap();
        text(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: __Host-kbastion="))
            .and_then(|l| l.split(';').next())
            .expect("the link sets the cookie")
            .to_string()
    };
    let cookie = cookie();
    // A failure shows the bastion's log (its directory goes with it).
    let log = bastion.log.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        default_hook(info);
    }));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "kbastion web terminal benchmark: {} MiB through a pty\n",
        bytes >> 20
    );

    // Download through a terminal: SSH (-tt) first, then the web.
    let mut ssh = bastion.ssh_command("ssh");
    ssh.args(["-tt", "alice@default/web-0@127.0.0.1"])
        .arg(format!("head -c {bytes} /dev/zero"));
    let start = Instant::now();
    let status = ssh
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let ssh_rate = bytes as f64 / 1e6 / start.elapsed().as_secs_f64();
    record("pty download MB/s", "kbastion-ssh", ssh_rate, "MB/s");
    let web_rate = runtime.block_on(async {
        let mut terminal = Terminal::open(port, &cookie, "default/web-0").await;
        terminal.type_line("stty raw -echo; echo RE''ADY").await;
        terminal.wait_for(b"READY").await;
        let start = Instant::now();
        terminal
            .type_line(&format!("head -c {bytes} /dev/zero; exit"))
            .await;
        let mut zeros = 0u64;
        while let Some(data) = terminal.output().await {
            zeros += data.iter().filter(|b| **b == 0).count() as u64;
        }
        assert_eq!(zeros, bytes, "every byte arrived");
        bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
    });
    record("pty download MB/s", "kbastion-web", web_rate, "MB/s");
    record(
        "web / ssh download ratio",
        "kbastion-web",
        web_rate / ssh_rate,
        "x",
    );

    // Keystroke round trip: web, then kubectl exec -t straight to the API.
    let mut web_samples = runtime.block_on(async {
        let mut terminal = Terminal::open(port, &cookie, "default/web-0").await;
        terminal
            .type_line("stty raw -echo; echo RE''ADY; exec cat")
            .await;
        terminal.wait_for(b"READY").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut samples = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let byte = b'a' + (i % 26) as u8;
            let start = Instant::now();
            terminal
                .send(ClientMessage::Input(Bytes::from(vec![byte])))
                .await;
            terminal.wait_for(&[byte]).await;
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
        samples
    });
    web_samples.sort_by(f64::total_cmp);
    let p = |samples: &[f64], q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    record(
        "keystroke round trip p50 (us)",
        "kbastion-web",
        p(&web_samples, 0.5),
        "us",
    );
    record(
        "keystroke round trip p99 (us)",
        "kbastion-web",
        p(&web_samples, 0.99),
        "us",
    );
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/keystroke.py");
    let out = Command::new("python3")
        .arg(&driver)
        .arg(rounds.to_string())
        .args(["kubectl", "--kubeconfig"])
        .arg(&sim.kubeconfig)
        .args([
            "--context",
            "admin",
            "exec",
            "-it",
            "web-0",
            "-c",
            "app",
            "--",
        ])
        .args(["sh", "-c", "stty raw -echo; echo READY; exec cat"])
        .output()
        .unwrap();
    let direct: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("direct exec keystrokes: {}", text(&out.stderr)));
    let direct_p99 = direct["p99_us"].as_f64().unwrap_or(0.0);
    record(
        "keystroke round trip p50 (us)",
        "direct-exec",
        direct["p50_us"].as_f64().unwrap_or(0.0),
        "us",
    );
    record(
        "keystroke round trip p99 (us)",
        "direct-exec",
        direct_p99,
        "us",
    );
    record(
        "keystroke p99 added over direct exec (us)",
        "kbastion-web",
        p(&web_samples, 0.99) - direct_p99,
        "us",
    );

    // A stalled tab: output never acknowledged, the command keeps writing.
    let pid = bastion.process.0.id();
    let growth = runtime.block_on(async {
        let mut terminal = Terminal::open(port, &cookie, "default/web-0").await;
        terminal.ack = false;
        terminal.type_line("cat /dev/zero").await;
        let before = rss_kib(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut peak = before;
        while Instant::now() < deadline {
            // Whatever the window lets through is read, never acknowledged.
            let _ = tokio::time::timeout(Duration::from_millis(200), terminal.output()).await;
            peak = peak.max(rss_kib(pid));
        }
        terminal
            .send(ClientMessage::Input(Bytes::from_static(b"\x03exit\r")))
            .await;
        (peak - before) as f64 / 1024.0
    });
    record(
        "RSS growth with a stalled tab, 10 s (MiB)",
        "kbastion-web",
        growth,
        "MiB",
    );

    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let json = serde_json::json!({"bytes": bytes, "rounds": rounds, "results": rows});
    std::fs::write(
        out_dir.join("web.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("\nwritten: target/bench/web.json");
}
