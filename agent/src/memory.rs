//! Giving memory back to the system after a burst.
//!
//! glibc's malloc keeps what a burst freed in its per-thread arenas: after
//! 20,000 file events the agent stayed at 4x its idle RSS for good
//! (BENCHMARKS.md, post-burst memory). `malloc_trim(0)` returns the free
//! pages of every arena (with `MADV_DONTNEED`, also from the middle of a
//! heap). No maintained crate wraps it, so this is the one `unsafe` call of
//! the agent; other allocators were measured and kept more (mimalloc:
//! idle RSS 3x glibc's).

/// Caps glibc's malloc at two arenas (its default is eight per core, and
/// what a burst leaves live is then scattered over every thread's arena,
/// pinning their pages). Call first thing in `main`, before threads start.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// `M_ARENA_MAX` in glibc's <malloc.h>.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt takes two integers and only sets the allocator's
        // parameters; called before any other thread exists.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

/// Returns free heap memory to the system (glibc only; a no-op elsewhere).
/// Costs a few milliseconds on a heap of tens of MB: call it after bursts,
/// not per event.
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointer, touches only the
        // allocator's own free lists under the arenas' locks, and is safe
        // to call from any thread at any time (glibc documents it MT-Safe).
        unsafe {
            malloc_trim(0);
        }
    }
}
