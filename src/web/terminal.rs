//! One web terminal: a shell session whose client is a browser page over
//! a WebSocket, run by the same session layer as an SSH channel (target
//! resolution, authorization, audit, recording, the bridge, limits, idle
//! and drain), and kept while its page is away.
//!
//! The exec starts once the page has sent its first size, so the first
//! prompt is drawn at the page's size. When the socket drops, the process
//! keeps running for `web.reattach_secs`; a page that comes back with the
//! terminal's id (kept in the tab's sessionStorage) reattaches and is
//! sent what it missed from the `Screen` ring. After the grace the input
//! side reports the client gone, and the bridge ends the session's
//! processes exactly as for a vanished SSH client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

pub use super::admission::Client;
use super::links::Grant;
use super::screen::{Next, Screen};
use super::wire::{ClientMessage, MAX_CLIENT_MESSAGE, ServerMessage, WireError};
use crate::bastion::Shared;
use crate::login::Target;
use crate::session::io::Chunk;
use crate::session::io::{ClientEvent, ClientInput, ClientOutput, Pty};
use crate::target::Reached;

/// The TERM a web terminal's shell gets: xterm.js emulates xterm.
const TERM: &str = "xterm-256color";

/// The close code for a page whose terminal another page took over
/// (4000-4999: for applications, RFC 6455 §7.4.2); the page does not
/// reconnect on it.
const TAKEN_OVER: CloseCode = CloseCode::Library(4001);

/// A page must send its size this soon after opening the socket.
const FIRST_SIZE_WAIT: Duration = Duration::from_secs(30);

/// Input a page may have sent that the process has not taken yet: the
/// page sends only within the credit kbastion grants (`ServerMessage::
/// Credit`) as the process takes input, so the socket is always read
/// (acknowledgements of output, resizes) and never more than this waits
/// for a process that reads late. A paste larger than this goes at the
/// process's pace.
const INPUT_WINDOW: u32 = 64 * 1024;

/// tungstenite's own bounds, above ours (`MAX_CLIENT_MESSAGE`, which is
/// answered with a close frame and its reason) so that ours decides.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(4 * MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(4 * MAX_CLIENT_MESSAGE))
}

/// The terminals of this replica that a page may reattach to.
#[derive(Default)]
pub struct Terminals {
    open: Mutex<HashMap<String, Arc<Terminal>>>,
}

impl Terminals {
    fn find(&self, id: &str) -> Option<Arc<Terminal>> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn insert(&self, terminal: Arc<Terminal>) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(terminal.id.clone(), terminal);
    }

    fn remove(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

struct Terminal {
    /// The session's id (also in the audit trail and the recording's name).
    id: String,
    person: String,
    target: Target,
    screen: Arc<Screen>,
    /// The page's input, bounded by `INPUT_WINDOW` (the page's credit).
    events: mpsc::UnboundedSender<ClientEvent>,
    /// The page's latest size (sizes replace each other, never queue).
    size: watch::Sender<(u16, u16)>,
    /// Input received from pages, and taken by the process (advanced as
    /// each chunk is handed on): their difference is what waits.
    input_received: std::sync::atomic::AtomicU64,
    input_taken: Arc<watch::Sender<u64>>,
    /// None while a page is attached; else since when none is.
    detached: watch::Sender<Option<Instant>>,
    /// The session's exit status, once it has one.
    exit: watch::Sender<Option<u32>>,
    /// Cancels the attached page's socket (another page took over).
    holder: Mutex<CancellationToken>,
}

/// Serves one terminal WebSocket: reattaches to the terminal the page
/// names, or starts a new session once the page has sent its size.
pub async fn serve<S>(
    shared: Arc<Shared>,
    terminals: Arc<Terminals>,
    grant: Grant,
    target: Target,
    attach: Option<(String, u64)>,
    client: Client,
    mut socket: WebSocketStream<S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some((id, offset)) = attach {
        match terminals.find(&id) {
            Some(terminal) if terminal.person == grant.person && terminal.target == target => {
                tracing::info!(source = %client.source, session = %terminal.id, person = %grant.person, "web: page reattached");
                let from = terminal.screen.resume_at(offset);
                pump(&shared, &terminal, from, socket).await;
                return;
            }
            _ => {
                let line = "the earlier session in this tab has ended; this is a new one";
                let frame = ServerMessage::Message(format!("kbastion: {line}")).encode();
                if socket.send(Message::Binary(frame)).await.is_err() {
                    return;
                }
            }
        }
    }
    let setup_started = Instant::now();
    let Some((cols, rows)) = first_size(&mut socket).await else {
        return;
    };
    let pty = Pty {
        term: TERM.into(),
        width: u32::from(cols),
        height: u32::from(rows),
    };
    // A log is followed (no options from a page), anything else a shell.
    let kind = match &target {
        Target::Container {
            view: crate::login::View::Logs,
            ..
        } => crate::audit::SessionKind::Logs {
            options: String::new(),
        },
        _ => crate::audit::SessionKind::Shell,
    };
    let admitted = match super::admission::admit(
        &shared,
        &grant,
        &target,
        &client,
        kind,
        Some(&pty),
        setup_started,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refused) => return refuse(socket, &refused.reason).await,
    };
    let (events, events_rx) = mpsc::unbounded_channel();
    let terminal = Arc::new(Terminal {
        id: admitted.ending.session.id.clone(),
        person: grant.person.clone(),
        target: target.clone(),
        screen: Arc::new(Screen::default()),
        events,
        size: watch::channel((cols, rows)).0,
        input_received: Default::default(),
        input_taken: Arc::new(watch::channel(0).0),
        detached: watch::channel(None).0,
        exit: watch::channel(None).0,
        holder: Mutex::default(),
    });
    terminals.insert(terminal.clone());
    let input = WebInput {
        events: events_rx,
        size: terminal.size.subscribe(),
        detached: terminal.detached.subscribe(),
        grace: Duration::from_secs(shared.config.web.reattach_secs),
        gone: false,
    };
    let output = WebOutput {
        terminal: terminal.clone(),
    };
    let runner = {
        let (shared, terminals, terminal) = (shared.clone(), terminals.clone(), terminal.clone());
        tokio::spawn(async move {
            let super::admission::Admitted {
                reaches,
                mut context,
                ending,
            } = admitted;
            // A browser types UTF-8 (see `session::environment`).
            context.env = crate::session::environment::ClientEnv::locale(&shared.config.web.locale);
            let report = match reaches {
                Reached::Exec(target) => {
                    // A debug container's shell says where the target's
                    // files are, as over SSH.
                    if let Some(note) = &target.note {
                        output.tell(note, true).await;
                    }
                    crate::session::serve(
                        crate::session::Service::Shell,
                        Arc::new(target),
                        Some(pty),
                        input,
                        output,
                        context,
                    )
                    .await
                }
                // A log followed on the screen until Ctrl-C, as over SSH.
                Reached::Log(source) => {
                    let log = crate::logs::follow(source);
                    log.serve(input, &output, true, &context).await
                }
            };
            ending.end(&report);
            terminal.screen.close();
            terminals.remove(&terminal.id);
        })
    };
    pump(&shared, &terminal, 0, socket).await;
    // The session runs on without a page until the grace is over; the
    // runner owns it and ends it.
    drop(runner);
}

/// Waits for the page's first size message; other messages before it are
/// dropped (the page sends its size first).
async fn first_size<S>(socket: &mut WebSocketStream<S>) -> Option<(u16, u16)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let wait = async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Binary(frame) = message
                && let Ok(ClientMessage::Resize { cols, rows }) = ClientMessage::decode(frame)
            {
                return Some((cols.max(1), rows.max(1)));
            }
        }
        None
    };
    tokio::time::timeout(FIRST_SIZE_WAIT, wait)
        .await
        .ok()
        .flatten()
}

/// Tells the page why there is no session, in one line, and closes.
async fn refuse<S>(mut socket: WebSocketStream<S>, reason: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = ServerMessage::Message(format!("kbastion: {reason}")).encode();
    let _ = socket.send(Message::Binary(frame)).await;
    let _ = socket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await;
}

/// Carries a terminal between its process and one page until the
/// process's output ends (then the exit status and a normal close), the
/// page goes away, or another page takes the terminal over.
async fn pump<S>(shared: &Shared, terminal: &Terminal, from: u64, socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let other_page = CancellationToken::new();
    {
        let mut holder = terminal.holder.lock().unwrap_or_else(|p| p.into_inner());
        holder.cancel();
        *holder = other_page.clone();
    }
    terminal.detached.send_replace(None);
    let (mut sink, mut stream) = socket.split();
    let keepalive = &shared.config.timeouts;
    let interval = Duration::from_secs(keepalive.keepalive_secs.clamp(1, 3600));
    // The page learns the ping interval, so that it can tell a dead socket
    // (a network that drops packets closes nothing) and reconnect.
    let attached = ServerMessage::Attached {
        id: terminal.id.clone(),
        keepalive_secs: interval.as_secs() as u16,
    };
    // This page's input credit: the window, less what an earlier page
    // sent that the process has not taken yet; it grows by what the
    // process takes.
    let mut taken = terminal.input_taken.subscribe();
    let mut taken_seen = *taken.borrow_and_update();
    let waiting = terminal
        .input_received
        .load(std::sync::atomic::Ordering::SeqCst)
        .saturating_sub(taken_seen);
    let first_credit = u64::from(INPUT_WINDOW).saturating_sub(waiting) as u32;
    let mut credit = u64::from(first_credit);
    let greeting = [attached, ServerMessage::Credit(first_credit)];
    for message in greeting {
        if sink.send(Message::Binary(message.encode())).await.is_err() {
            terminal.detached.send_replace(Some(Instant::now()));
            return;
        }
    }
    let credit_for = {
        let input_taken = terminal.input_taken.clone();
        let credit: crate::session::io::Credit =
            Arc::new(move |bytes| input_taken.send_modify(|taken| *taken += bytes as u64));
        credit
    };
    // A page silent for this long is gone, as an SSH client that misses
    // `keepalive_max` keepalives.
    let silent_limit = interval * (keepalive.keepalive_max.max(1) as u32 + 1);
    let mut ping = tokio::time::interval(interval);
    let mut heard = Instant::now();
    let mut sent = from;
    let close = |code: CloseCode, reason: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let ended = loop {
        tokio::select! {
            () = other_page.cancelled() => {
                let _ = sink.send(close(TAKEN_OVER, "this terminal was opened in another tab")).await;
                return;
            }
            Ok(()) = taken.changed() => {
                let now = *taken.borrow_and_update();
                let more = now.saturating_sub(taken_seen);
                taken_seen = now;
                credit += more;
                let frame = ServerMessage::Credit(more.min(u64::from(u32::MAX)) as u32).encode();
                if more > 0 && sink.send(Message::Binary(frame)).await.is_err() {
                    break false;
                }
            }
            next = terminal.screen.next(sent) => match next {
                Next::Output { offset, data } => {
                    sent = offset + data.len() as u64;
                    let frame = ServerMessage::Output { offset, data }.encode();
                    if sink.send(Message::Binary(frame)).await.is_err() {
                        break false;
                    }
                }
                Next::Closed => {
                    let code = *terminal.exit.borrow();
                    if let Some(code) = code {
                        let _ = sink.send(Message::Binary(ServerMessage::Exit(code).encode())).await;
                    }
                    let _ = sink.send(close(CloseCode::Normal, "")).await;
                    break true;
                }
            },
            message = stream.next() => {
                heard = Instant::now();
                let frame = match message {
                    Some(Ok(Message::Binary(frame))) => frame,
                    Some(Ok(Message::Text(_))) => {
                        let _ = sink.send(close(CloseCode::Unsupported, &WireError::Text.to_string())).await;
                        break false;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break false,
                };
                match ClientMessage::decode(frame) {
                    Ok(ClientMessage::Input(data)) => {
                        let Some(left) = credit.checked_sub(data.len() as u64) else {
                            tracing::info!(session = %terminal.id, "web: page sent input beyond its credit; closing its socket");
                            let _ = sink.send(close(CloseCode::Policy, "input beyond the credit kbastion gave")).await;
                            break false;
                        };
                        credit = left;
                        terminal.input_received.fetch_add(data.len() as u64, std::sync::atomic::Ordering::SeqCst);
                        let chunk = Chunk::new(data, Some(credit_for.clone()));
                        if terminal.events.send(ClientEvent::Data(chunk)).is_err() {
                            break false;
                        }
                    }
                    Ok(ClientMessage::Resize { cols, rows }) => {
                        terminal.size.send_replace((cols, rows));
                    }
                    Ok(ClientMessage::Ack(offset)) => terminal.screen.ack(offset),
                    Ok(ClientMessage::Keepalive) => {}
                    Err(error) => {
                        let code = match error {
                            WireError::TooBig(_) => CloseCode::Size,
                            _ => CloseCode::Invalid,
                        };
                        tracing::info!(session = %terminal.id, %error, "web: page sent a bad message; closing its socket");
                        let _ = sink.send(close(code, &error.to_string())).await;
                        break false;
                    }
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > silent_limit {
                    break false;
                }
                if sink.send(Message::Binary(ServerMessage::Ping.encode())).await.is_err() {
                    break false;
                }
            }
        }
    };
    if !ended && !other_page.is_cancelled() {
        tracing::info!(session = %terminal.id, grace_secs = shared.config.web.reattach_secs, "web: page detached; the session waits for it");
        terminal.detached.send_replace(Some(Instant::now()));
    }
}

/// The page's side of the session, as the bridge reads it.
struct WebInput {
    events: mpsc::UnboundedReceiver<ClientEvent>,
    size: watch::Receiver<(u16, u16)>,
    detached: watch::Receiver<Option<Instant>>,
    grace: Duration,
    gone: bool,
}

/// Completes once no page has been attached for `grace`.
async fn abandoned(mut detached: watch::Receiver<Option<Instant>>, grace: Duration) {
    loop {
        let left = *detached.borrow_and_update();
        match left {
            Some(at) => {
                let deadline = tokio::time::Instant::from_std(at + grace);
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return,
                    changed = detached.changed() => if changed.is_err() { return },
                }
            }
            None => {
                if detached.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

impl ClientInput for WebInput {
    /// The page is gone for good even while its input waits for a process
    /// that does not read it.
    fn departed(&self) -> crate::session::io::Departure {
        Box::pin(abandoned(self.detached.clone(), self.grace))
    }

    async fn next(&mut self) -> ClientEvent {
        // The deadline comes from when the page left, not from this call:
        // the bridge may drop and call again any number of times.
        while !self.gone {
            let left = *self.detached.borrow_and_update();
            let deadline = left.map(|at| tokio::time::Instant::from_std(at + self.grace));
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => return event,
                    None => self.gone = true,
                },
                Ok(()) = self.size.changed() => {
                    let (cols, rows) = *self.size.borrow_and_update();
                    return ClientEvent::Resize { cols: u32::from(cols), rows: u32::from(rows) };
                }
                () = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                    self.gone = true;
                }
                changed = self.detached.changed() => if changed.is_err() {
                    self.gone = true;
                },
            }
        }
        ClientEvent::Gone
    }
}

/// The session's output into the terminal's screen (a web terminal has one
/// stream: stderr goes to the same screen).
struct WebOutput {
    terminal: Arc<Terminal>,
}

impl ClientOutput for WebOutput {
    fn stdout(&self) -> crate::session::io::Writer {
        Box::new(self.terminal.screen.writer())
    }

    fn stderr(&self) -> crate::session::io::Writer {
        Box::new(self.terminal.screen.writer())
    }

    async fn tell(&self, line: &str, _tty: bool) {
        self.terminal
            .screen
            .tell(&crate::session::io::message_bytes(line, true));
    }

    async fn finish(&self, code: u32) {
        self.terminal.exit.send_replace(Some(code));
        self.terminal.screen.close();
    }

    async fn close(&self) {
        self.terminal.screen.close();
    }
}
