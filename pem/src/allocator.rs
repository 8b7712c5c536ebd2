//! Allocator settings for processes that host a PEM (`vizier-pem`, `px local`).
//!
//! The PEM allocates a little for every message it parses; mimalloc's thread-local
//! free lists make that cheap (glibc malloc was a quarter of its CPU time under load).
//! But mimalloc's defaults keep freed memory around and commit arenas eagerly, which
//! let resident memory pass the memory limit while tables expired old rows (the
//! `px local` memory test catches it). The binary declares
//! `#[global_allocator] static A: mimalloc::MiMalloc = mimalloc::MiMalloc;` and calls
//! [`return_freed_memory_promptly`] first thing.

/// Returns freed memory to the OS at once and commits only what is used. Values from
/// `enum mi_option_e` of the mimalloc that libmimalloc-sys 0.1 bundles.
pub fn return_freed_memory_promptly() {
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting options has no memory-safety preconditions.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}
