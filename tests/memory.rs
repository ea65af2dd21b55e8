//! `retain_freed_memory`: a large buffer freed by one step is what the next
//! step gets, without fresh pages from the kernel (its own process: the
//! setting is process-wide).

/// Minor page faults of the calling thread so far.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn page_faults() -> i64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage.ru_minflt
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_freed_large_buffer_is_reused_without_page_faults() {
    // 16 MiB: a W4-inference activation. Without the setting, glibc maps it
    // afresh, then (its thresholds having adapted) takes it from new heap
    // pages; either way its 4,096 pages fault again.
    const LEN: usize = 4 << 20;
    let touch = || {
        let v = vec![1.0f32; LEN];
        std::hint::black_box(&v);
    };
    assert!(adgraph::retain_freed_memory());
    touch();
    let before = page_faults();
    touch();
    let faults = page_faults() - before;
    assert!(
        faults < 64,
        "{faults} page faults for a reused 16 MiB buffer"
    );
}
