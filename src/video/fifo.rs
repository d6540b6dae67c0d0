//! A named pipe (FIFO) as a video input: wait for its writer where Ctrl-C can reach us.
//!
//! Opening a FIFO for reading blocks in the kernel until a writer opens it, and FFmpeg's
//! interrupt callback is not consulted inside that `open(2)`: a pipeline reopening its FIFO
//! for the next epoch sat there for ever and ignored the first Ctrl-C. Here the FIFO is opened
//! without blocking and polled, the stop flags checked between polls; once data is waiting
//! (so a writer is there) FFmpeg's own blocking open returns at once. The handle is kept until
//! FFmpeg holds its own, so the writer never meets a pipe without readers (EPIPE).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::time::{Duration, Instant};

/// How long to wait quietly before saying that the run waits for a writer.
const QUIET_WAIT: Duration = Duration::from_secs(1);

/// If `input` is a FIFO, waits until its writer has sent data, or until `stopped()`; returns
/// the reader to hold until FFmpeg has opened the FIFO itself (None for anything else), or why
/// not.
pub(crate) fn wait_for_writer(input: &str, stopped: &dyn Fn() -> bool) -> Result<Option<File>, String> {
    let is_fifo = std::fs::metadata(input).is_ok_and(|m| m.file_type().is_fifo());
    if !is_fifo {
        return Ok(None);
    }
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(input)
            .map_err(|e| format!("cannot open the FIFO: {e}"))
    };
    let mut reader = open()?;
    let started = Instant::now();
    let mut told = false;
    loop {
        if stopped() {
            return Err("stopped while waiting for a writer on the FIFO".into());
        }
        let mut poll = libc::pollfd { fd: reader.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call; the descriptor is ours.
        let ready = unsafe { libc::poll(&mut poll, 1, 100) };
        if ready > 0 && poll.revents & libc::POLLIN != 0 {
            return Ok(Some(reader));
        }
        if ready > 0 && poll.revents & libc::POLLHUP != 0 {
            // A writer came and went without sending: a fresh reader waits for the next one
            // (the old one would report the hang-up on every poll).
            reader = open()?;
        }
        if !told && started.elapsed() >= QUIET_WAIT {
            tracing::info!("waiting for a writer on the FIFO {input} (Ctrl-C stops)");
            told = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn fifo(dir: &std::path::Path) -> String {
        let path = dir.join("in.fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        path.to_str().unwrap().to_string()
    }

    #[test]
    fn a_fifo_without_a_writer_is_left_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo(dir.path());
        let flag = Arc::new(AtomicBool::new(false));
        let raised = Arc::clone(&flag);
        let stop = move || raised.load(Ordering::Relaxed);
        let raise = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let err = wait_for_writer(&path, &stop).unwrap_err();
        raise.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(err.contains("stopped while waiting for a writer"), "{err}");
    }

    #[test]
    fn a_fifo_is_ready_once_its_writer_sends_and_other_inputs_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo(dir.path());
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut w = std::fs::OpenOptions::new().write(true).open(writer_path).unwrap();
            w.write_all(b"frames").unwrap();
        });
        let never = || false;
        let reader = wait_for_writer(&path, &never).unwrap();
        assert!(reader.is_some());
        writer.join().unwrap();
        assert!(wait_for_writer(dir.path().to_str().unwrap(), &never).unwrap().is_none());
        assert!(wait_for_writer("udp://127.0.0.1:9", &never).unwrap().is_none());
    }
}
