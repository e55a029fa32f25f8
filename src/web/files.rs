//! Files from the page: `GET /files/TARGET?path=P` downloads the target's
//! file P, `PUT /files/TARGET?path=P` (the request's body is the file)
//! writes one. Both go through `remote_fs`, the remote file code of
//! kbastion's SFTP and scp, and each is a session of its own: admitted as
//! a terminal is (`admission`: drain, limits, resolution and RBAC),
//! audited as a download or an upload with its path, and run under the
//! same idle, drain and revocation rules (`supervise`). Data streams both
//! ways with bounded buffers: a slow browser slows the read in the target,
//! a slow target slows the upload, and neither grows kbastion's memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;

use super::admission::{Admitted, Client, Ending, admit};
use super::links::Grant;
use super::response::{Body, plain};
use crate::audit::SessionKind;
use crate::file_system::{FsError, WriteOpen};
use crate::login::Target;
use crate::remote_fs::RemoteFs;
use crate::session::control::{
    Activity, Interrupted, Outcome, Report, STOPPED, revoked_message, supervise,
};
use crate::session::io::ClientOutput;

/// Bytes read from the target per chunk of a download.
const CHUNK: usize = 64 * 1024;

/// Chunks of a download waiting for the browser: with `CHUNK`, at most
/// 256 KiB per download are held.
const QUEUE: usize = 4;

/// The path of a file request (`?path=/abs/file`), which must be absolute:
/// there is no current directory to be relative to.
pub fn file_path(query: Option<&str>) -> Result<String, String> {
    let path = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "path")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !path.starts_with('/') {
        return Err(format!(
            "the file's path must be absolute (/dir/file), not {path:?}"
        ));
    }
    if path.contains('\0') {
        return Err("a file's path cannot contain a NUL byte".into());
    }
    Ok(path)
}

/// Why a transfer stopped before its end.
enum Stop {
    ClientGone,
    Fs(FsError),
}

impl Stop {
    /// As the audit records it.
    fn outcome(&self) -> Outcome {
        match self {
            Stop::ClientGone => Outcome::ClientGone,
            Stop::Fs(error) => Outcome::Failed(error.to_string()),
        }
    }
}

/// The file's name for the browser's download (`Content-Disposition`,
/// RFC 6266 with RFC 8187's UTF-8 form).
fn disposition(path: &str) -> String {
    let name = path.rsplit('/').next().filter(|n| !n.is_empty());
    let name = name.unwrap_or("download");
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>();
    // form encoding writes a space as '+'; RFC 8187 wants %20.
    let encoded = encoded.replace('+', "%20");
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// A file service's client side for `supervise`: an HTTP exchange shows
/// no lines; ending the service ends (and so aborts) the response.
struct Exchange;

impl ClientOutput for Exchange {
    fn stdout(&self) -> crate::session::io::Writer {
        Box::new(tokio::io::sink())
    }

    fn stderr(&self) -> crate::session::io::Writer {
        Box::new(tokio::io::sink())
    }

    async fn tell(&self, _line: &str, _tty: bool) {}

    async fn finish(&self, _code: u32) {}

    async fn close(&self) {}
}

/// Runs a transfer under the session's rules and ends the session with
/// how it went (the bytes it carried are `activity`'s).
async fn run_session(
    context: crate::bridge::SessionContext,
    ending: Ending,
    activity: Activity,
    work: impl Future<Output = Result<(), Stop>>,
) -> Result<Result<(), Stop>, Interrupted> {
    let result = supervise(
        &context.control,
        &activity,
        &Exchange,
        crate::session::control::Tell::Nothing,
        work,
    )
    .await;
    let outcome = match &result {
        Ok(Ok(())) => Outcome::Exited(0),
        Ok(Err(stop)) => stop.outcome(),
        Err(interrupted) => Outcome::of(interrupted.clone()),
    };
    ending.end(&Report {
        outcome,
        bytes_in: activity.bytes_in.load(Ordering::Relaxed),
        bytes_out: activity.bytes_out.load(Ordering::Relaxed),
    });
    result
}

/// The one line for a file that cannot be read or written, with the
/// HTTP status that says the same.
fn fs_refusal(error: &FsError) -> Response<Body> {
    let status = match error {
        FsError::NotFound(_) => StatusCode::NOT_FOUND,
        FsError::PermissionDenied(_) | FsError::ReadOnly(_) => StatusCode::FORBIDDEN,
        FsError::Failure(_) => StatusCode::BAD_REQUEST,
    };
    plain(status, &error.to_string())
}

/// The answer for a transfer the session's rules ended.
fn interrupted(interrupted: Interrupted) -> Response<Body> {
    match interrupted {
        Interrupted::Idle => plain(
            StatusCode::REQUEST_TIMEOUT,
            "the transfer carried no data for the idle timeout and was ended",
        ),
        Interrupted::Revoked(reason) => plain(StatusCode::FORBIDDEN, &revoked_message(&reason)),
        Interrupted::RecordingStopped(line) => plain(StatusCode::SERVICE_UNAVAILABLE, &line),
        Interrupted::Stopped => plain(StatusCode::SERVICE_UNAVAILABLE, STOPPED),
    }
}

/// Admits a transfer as a web session: its files, its rules and its end,
/// or the refusal's answer.
async fn admit_transfer(
    shared: &Arc<crate::bastion::Shared>,
    grant: &Grant,
    target: &Target,
    client: &Client,
    kind: SessionKind,
) -> Result<(RemoteFs, crate::bridge::SessionContext, Ending), Response<Body>> {
    match admit(shared, grant, target, client, kind, None, Instant::now()).await {
        Ok(Admitted {
            reaches,
            context,
            ending,
        }) => Ok((
            super::admission::files(reaches, context.api_wait),
            context,
            ending,
        )),
        Err(refused) => Err(plain(refused.status, &refused.reason)),
    }
}

/// Streams the target's file `path` to the browser.
pub async fn download(
    shared: &Arc<crate::bastion::Shared>,
    grant: &Grant,
    target: &Target,
    path: String,
    client: &Client,
) -> Response<Body> {
    let kind = SessionKind::Download { path: path.clone() };
    let (fs, context, ending) = match admit_transfer(shared, grant, target, client, kind).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let opened = async {
        let metadata = fs.check_readable(&path).await?;
        let reader = fs.reader(&path, 0).await?;
        Ok::<_, FsError>((metadata, reader))
    };
    let (metadata, mut reader) = match opened.await {
        Ok(opened) => opened,
        Err(error) => {
            let response = fs_refusal(&error);
            let failed = async { Err(Stop::Fs(error)) };
            let activity = context.traffic.clone();
            let _ = run_session(context, ending, activity, failed).await;
            return response;
        }
    };
    let size = metadata.size;
    let (chunks, body) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(QUEUE);
    let activity = context.traffic.clone();
    let work = {
        let (activity, path) = (activity.clone(), path.clone());
        async move {
            // The size the response announced, and not a byte more: a file
            // that grew meanwhile is cut there, one that shrank fails the
            // download (the browser sees it end early).
            let mut left = size;
            while left > 0 {
                let mut buffer = vec![0; CHUNK.min(left as usize)];
                let read = reader.read_full(&mut buffer).await.map_err(Stop::Fs)?;
                if read == 0 {
                    let error = FsError::Failure(format!("{path}: shorter than its {size} bytes"));
                    let _ = chunks
                        .send(Err(std::io::Error::other(error.to_string())))
                        .await;
                    return Err(Stop::Fs(error));
                }
                buffer.truncate(read);
                left -= read as u64;
                activity.bytes_out.fetch_add(read as u64, Ordering::Relaxed);
                if chunks
                    .send(Ok(Frame::data(Bytes::from(buffer))))
                    .await
                    .is_err()
                {
                    return Err(Stop::ClientGone);
                }
            }
            Ok(())
        }
    };
    // The response streams what the session sends; how it ended is the
    // audit's (the browser sees a download cut short).
    tokio::spawn(run_session(context, ending, activity, work));
    let stream = futures::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    let mut response = Response::new(http_body_util::StreamBody::new(stream).boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(value) = HeaderValue::from_str(&disposition(&path)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    super::response::secure_headers(headers);
    response
}

/// Writes the request's body into the target's file `path` (created or
/// truncated), and answers with one line: what was written, or why not.
pub async fn upload(
    shared: &Arc<crate::bastion::Shared>,
    grant: &Grant,
    target: &Target,
    path: String,
    client: &Client,
    body: Incoming,
) -> Response<Body> {
    let kind = SessionKind::Upload { path: path.clone() };
    let (fs, context, ending) = match admit_transfer(shared, grant, target, client, kind).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let activity = context.traffic.clone();
    let work = write(fs, path.clone(), body, activity.clone());
    let counted = activity.clone();
    match run_session(context, ending, activity, work).await {
        Ok(Ok(())) => {
            let written = counted.bytes_in.load(Ordering::Relaxed);
            plain(
                StatusCode::OK,
                &format!("uploaded {written} bytes to {path}"),
            )
        }
        Ok(Err(Stop::Fs(error))) => fs_refusal(&error),
        Ok(Err(Stop::ClientGone)) => plain(StatusCode::BAD_REQUEST, "the upload was cut short"),
        Err(stopped) => interrupted(stopped),
    }
}

/// Writes the body into `path`, created or truncated.
async fn write(
    fs: RemoteFs,
    path: String,
    mut body: Incoming,
    activity: Activity,
) -> Result<(), Stop> {
    let open = WriteOpen {
        create: true,
        truncate: true,
        exclusive: false,
        mode: None,
    };
    fs.prepare_write(&path, open).await.map_err(Stop::Fs)?;
    let mut writer = fs.writer(&path, 0, false).await.map_err(Stop::Fs)?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Stop::ClientGone)?;
        if let Ok(data) = frame.into_data() {
            activity
                .bytes_in
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            writer.write_all(&data).await.map_err(Stop::Fs)?;
        }
    }
    writer.finish().await.map_err(Stop::Fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute() {
        assert_eq!(
            file_path(Some("path=%2Fetc%2Fhosts")),
            Ok("/etc/hosts".into())
        );
        assert_eq!(file_path(Some("path=/a%20b/c")), Ok("/a b/c".into()));
        assert!(file_path(Some("path=etc/hosts")).is_err());
        assert!(file_path(None).is_err());
        assert!(file_path(Some("path=/a%00b")).is_err());
    }

    #[test]
    fn downloads_are_named_after_the_file() {
        assert_eq!(
            disposition("/var/log/app.log"),
            "attachment; filename=\"app.log\"; filename*=UTF-8''app.log"
        );
        assert_eq!(
            disposition("/tmp/é x\"y"),
            "attachment; filename=\"__x_y\"; filename*=UTF-8''%C3%A9%20x%22y"
        );
    }
}
