//! Turning transparent huge pages off for the process, first thing in
//! every binary's `main`.
//!
//! mimalloc (the global allocator) asks the kernel for transparent huge
//! pages on its arenas (`madvise(MADV_HUGEPAGE)`), and gives memory it has
//! not used for a second back (`MADV_DONTNEED`). A process that sets up
//! and drops connections by the thousand (a handshake storm, the load
//! harness's crowd of devices) keeps faulting those ranges in again, and
//! each fault on a huge-page range zeroes 2 MiB for an allocation of a few
//! hundred bytes. Measured at 3× overload with the harness co-located
//! (docs/PERFORMANCE.md, "Overload: huge pages"): the kernel's page
//! zeroing took 21 % of the process's CPU and goodput fell to a third;
//! with huge pages off it took 4 %. A gateway left on huge pages spent a
//! third more CPU setting up a 10,000-device reconnect storm.
//!
//! `PR_SET_THP_DISABLE` applies to every later fault, including those in
//! ranges mimalloc already advised (the kernel checks the flag at fault
//! time), so calling it at the top of `main` is early enough even though
//! the runtime allocated before. The binaries' own checks read a running
//! node's and harness's `/proc/PID/status` (`gateway/tests/lanes.rs`,
//! `loadtest/tests/cli.rs`).

/// Turns transparent huge pages off for this process (and children it
/// starts). Where the kernel has no such switch (not Linux) it does
/// nothing.
///
/// # Errors
/// When the kernel refuses the `prctl` call.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and
        // touches no memory of ours; the call cannot break Rust's
        // invariants. Exercised by `tests::the_switch_is_off_after_the_call`.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Red if the call did nothing.
    #[test]
    #[cfg(target_os = "linux")]
    fn the_switch_is_off_after_the_call() {
        disable_transparent_huge_pages().expect("prctl(PR_SET_THP_DISABLE)");
        // SAFETY: PR_GET_THP_DISABLE takes integer arguments only and
        // touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(rc, 1, "PR_GET_THP_DISABLE after the call");
    }
}
