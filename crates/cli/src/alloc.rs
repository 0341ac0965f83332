//! The process allocator: mimalloc, told to keep freed memory for reuse.

/// burn's CPU backend allocates and frees large activation buffers every step; glibc serves
/// those with fresh mmaps (a page fault per 4 KiB touched), mimalloc keeps them in its arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Position of `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the Rust bindings name
/// no constant for it); its documented default is 10 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 10;

/// By default mimalloc hands freed memory back to the OS after 10 ms; burn frees and
/// reallocates the same large activation buffers every step, so the kernel zeroes fresh pages
/// all the time (12% of a training profile). Keeping freed memory for reuse gives 25% more
/// MLM tokens/s at the cost of holding the peak footprint. `MIMALLOC_PURGE_DELAY` still wins.
pub fn keep_freed_memory() {
    // SAFETY: FFI calls that read and set one integer option of the allocator; the check on
    // the current value guards against a library whose option numbering differs.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT
            && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
        {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}
