//! The outbox transport (node and central): sends queued notifications (login codes,
//! invitations) by running the configured
//! `notification_command` once per message, retries failures with backoff, and gives up on
//! messages whose content has expired. The queue is a SQLite table, so nothing queued is lost
//! to a restart.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::Notify;

use super::accounts::{self, OutboxItem};
use super::{ApiError, AuthHost, wall_ms};
use crate::limits::OUTBOX_KEEP_MS;

/// Messages taken from the queue per pass.
pub const OUTBOX_BATCH_MAX: usize = 16;

/// Longest a transport command may run before it is killed and the attempt counts as failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the queue is looked at without a wake-up (retries fall due, messages expire).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Retry delay after `attempts` failures: 1 s, 2 s, 4 s, ... capped at 60 s.
fn backoff_ms(attempts: u32) -> u64 {
    1_000u64.saturating_mul(1 << attempts.min(6)).min(60_000)
}

/// Runs the transport until `stop` turns true.
pub async fn run<H: AuthHost>(host: Arc<H>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let command = host.auth().notification_command.clone();
    let wake: Arc<Notify> = Arc::clone(&host.auth().outbox_wake);
    if command.is_empty() {
        return;
    }
    loop {
        if let Err(e) = pass(&*host, &command).await {
            tracing::warn!(error = ?e, "outbox pass failed");
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

fn internal(e: rusqlite::Error) -> ApiError {
    ApiError::internal(&e)
}

async fn pass<H: AuthHost>(host: &H, command: &[String]) -> Result<(), ApiError> {
    let expired = host
        .accounts_write(|conn, now_ms| {
            accounts::outbox_prune(conn, now_ms.saturating_sub(OUTBOX_KEEP_MS))
                .and_then(|_| accounts::outbox_expire(conn, now_ms))
                .map_err(internal)
        })
        .await?;
    if expired > 0 {
        tracing::warn!(expired, "outbox: notifications expired unsent");
    }
    let now_ms = wall_ms();
    let due = host
        .accounts_read(move |conn| accounts::outbox_due(conn, now_ms, OUTBOX_BATCH_MAX))
        .await?;
    for item in due {
        let id = item.id;
        match send(command, &item).await {
            Ok(()) => {
                host.accounts_write(move |conn, _| {
                    accounts::outbox_sent(conn, id).map_err(internal)
                })
                .await?;
                tracing::info!(id, channel = %item.channel, "outbox: sent");
            }
            Err(error) => {
                let next = wall_ms() + backoff_ms(item.attempts);
                tracing::warn!(id, %error, "outbox: send failed; will retry");
                host.accounts_write(move |conn, _| {
                    accounts::outbox_failed(conn, id, &error, next).map_err(internal)
                })
                .await?;
            }
        }
    }
    Ok(())
}

/// Runs the command for one message. Its output is not read (it may be chatty); its exit
/// status decides.
async fn send(command: &[String], item: &OutboxItem) -> Result<(), String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| "no notification_command configured".to_owned())?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("CRVS_CHANNEL", &item.channel)
        .env("CRVS_RECIPIENT", &item.recipient)
        .env("CRVS_TEMPLATE", &item.template)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(item.body.as_bytes())
                .await
                .map_err(|e| format!("writing to {program}: {e}"))?;
        }
        child
            .wait()
            .await
            .map_err(|e| format!("waiting for {program}: {e}"))
    };
    match tokio::time::timeout(SEND_TIMEOUT, run).await {
        Err(_) => Err(format!("{program} took longer than {SEND_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute() {
        assert_eq!(backoff_ms(0), 1_000);
        assert_eq!(backoff_ms(1), 2_000);
        assert_eq!(backoff_ms(5), 32_000);
        assert_eq!(backoff_ms(6), 60_000);
        assert_eq!(backoff_ms(40), 60_000);
    }
}
