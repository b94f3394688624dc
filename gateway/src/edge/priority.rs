//! Thread priorities of the two lanes (`quic.shared_lane_nice`).
//!
//! With `quic.punch_listen`, punches have their own socket, endpoint and
//! runtime thread, but under a ping flood that thread still waits for a
//! CPU behind the shared lane's busy workers: the kernel shares the cores
//! evenly among runnable threads, and a punch's handshake and ack took a
//! few time slices each (the `ping-flood` scenario's punch p99 was about
//! 10× its unloaded value with the punch lane alone). Raising the shared
//! lane's nice value, which needs no privilege, lets the kernel run the
//! punch lane and the log writer first; the pings get the rest, which is
//! the contract's order (docs/DESIGN.md: pings are shed first).

use std::io;

/// Raises the calling thread's nice value to `nice` (never lowers it: an
/// unprivileged process may not). Linux applies `setpriority` with a
/// thread id to that thread alone. `nice` ≤ 0 does nothing; elsewhere
/// than Linux, where a nice value is the whole process's, so does
/// everything.
#[cfg(not(target_os = "linux"))]
pub fn lower_this_thread(nice: i32) -> io::Result<()> {
    let _ = nice;
    Ok(())
}

/// Raises the calling thread's nice value to `nice` (never lowers it: an
/// unprivileged process may not). Linux applies `setpriority` with a
/// thread id to that thread alone. `nice` ≤ 0 does nothing.
#[cfg(target_os = "linux")]
pub fn lower_this_thread(nice: i32) -> io::Result<()> {
    if nice <= 0 {
        return Ok(());
    }
    let nice = nice.min(19);
    // SAFETY: `gettid` takes no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    let who = tid as libc::id_t;
    // `getpriority` returns -1 both as a value and as an error: errno
    // tells them apart.
    // SAFETY: `__errno_location` returns this thread's errno slot, valid
    // for the thread's lifetime; writing 0 to it is how `getpriority`'s
    // errors are told from a value of -1.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain system calls on this thread's own id, no pointers.
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
    if current == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error().unwrap_or(0) != 0 {
            return Err(e);
        }
    }
    if current >= nice {
        return Ok(());
    }
    // SAFETY: as above; `setpriority` only reads its integer arguments.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `on_thread_start` hook of the runtime that serves `quic.listen`:
/// each of its threads lowers itself to `nice` (0: nothing), and says so
/// once if the kernel refuses.
pub fn shared_lane_hook(nice: i32) -> impl Fn() + Send + Sync + 'static {
    let warned = std::sync::atomic::AtomicBool::new(false);
    move || {
        if let Err(e) = lower_this_thread(nice) {
            if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(error = %e, nice, "cannot lower this runtime's threads to nice {nice}; they share the CPU evenly with the punch lane");
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        // SAFETY: as in `lower_this_thread`.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    /// The call lowers the thread it runs on and no other: the punch lane
    /// and the log writer must keep their priority.
    #[test]
    fn lowers_only_the_calling_thread() {
        let before_here = nice_of_this_thread();
        let target = (before_here.max(0) + 5).min(19);
        let (lowered, other) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                lower_this_thread(target).unwrap();
                nice_of_this_thread()
            });
            let lowered = a.join().unwrap();
            let b = s.spawn(nice_of_this_thread);
            (lowered, b.join().unwrap())
        });
        assert_eq!(lowered, target);
        assert_eq!(
            other, before_here,
            "a new thread keeps the process's nice value"
        );
        assert_eq!(nice_of_this_thread(), before_here);
    }

    /// A thread already nicer than asked stays as it is (lowering is one
    /// way for an unprivileged process), and 0 does nothing.
    #[test]
    fn never_raises_a_thread_back() {
        let n = std::thread::spawn(|| {
            lower_this_thread(12).unwrap();
            lower_this_thread(3).unwrap();
            lower_this_thread(0).unwrap();
            nice_of_this_thread()
        })
        .join()
        .unwrap();
        assert_eq!(n, 12.max(nice_of_this_thread()));
    }

    /// The hook runs as a runtime's thread-start callback and lowers the
    /// runtime's workers.
    #[test]
    fn the_hook_lowers_a_runtimes_workers() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(shared_lane_hook(7))
            .build()
            .unwrap();
        let n = rt
            .block_on(async { tokio::spawn(async { nice_of_this_thread() }).await })
            .unwrap();
        assert_eq!(n, 7.max(nice_of_this_thread()));
    }
}
