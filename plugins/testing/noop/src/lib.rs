//! Does no I/O and imports nothing from the host: `open` returns two params
//! made from its input. It is the plugin benchmark P1 calls
//! (docs/BENCHMARKS.md); `noop-sdk` is the same plugin written with the SDK.
//!
//! Written without `std`, whose WASI libc imports `wasi:cli` and `wasi:io`
//! even when a plugin never prints. An instance serves one call and its
//! memory is thrown away afterwards, so the allocator below only ever moves
//! forward; the host's memory cap still bounds it.

#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};

wit_bindgen::generate!({
    path: "../../../wit",
    world: "processing-module",
    generate_all,
});

use bursar::plugin::types::{PluginError, PluginInfo};
use exports::bursar::plugin::processing::{CatalogItem, Context, Done, Guest, Outcome};

struct Noop;

impl Guest for Noop {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "noop".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features: Vec::new(),
        }
    }

    fn check_connection(_settings: Vec<(String, String)>) -> Result<(), PluginError> {
        Ok(())
    }

    fn catalog(_settings: Vec<(String, String)>) -> Result<Vec<CatalogItem>, PluginError> {
        Ok(Vec::new())
    }

    fn open(ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome::Done(Done {
            params: vec![
                ("opened_by".into(), "noop".into()),
                ("operation".into(), ctx.operation_id),
            ],
            secret_params: Vec::new(),
        }))
    }

    fn suspend(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported()
    }

    fn resume(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported()
    }

    fn close(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported()
    }

    fn prolong(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported()
    }

    fn change_plan(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported()
    }

    fn reinstall(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported()
    }

    fn poll(_ctx: Context, _remote_ref: String) -> Result<Outcome, PluginError> {
        unsupported()
    }
}

fn unsupported() -> Result<Outcome, PluginError> {
    Err(PluginError::Unsupported("noop only opens".into()))
}

export!(Noop);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// Hands out memory forward from the end of the program's data, growing
/// the memory only when the pages it starts with are used up (growing costs
/// the host a change of page protection), and never takes it back.
struct Forward;

static mut NEXT: usize = 0;
static mut END: usize = 0;

unsafe extern "C" {
    /// Where the linker put the first byte after the stack and static data.
    static __heap_base: u8;
}

const PAGE: usize = 65536;

// SAFETY: a component instance runs one call on one thread; `alloc` returns
// a block aligned as asked, never handed out before, or null.
unsafe impl GlobalAlloc for Forward {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe {
            if END == 0 {
                NEXT = &raw const __heap_base as usize;
                END = core::arch::wasm32::memory_size(0) * PAGE;
            }
            let start = NEXT.next_multiple_of(layout.align());
            if start + layout.size() > END {
                let pages = (start + layout.size() - END).div_ceil(PAGE);
                if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                    return core::ptr::null_mut();
                }
                END += pages * PAGE;
            }
            NEXT = start + layout.size();
            start as *mut u8
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: Forward = Forward;

/// The canonical ABI's allocation entry point (the host writes arguments
/// through it); `std` builds get it from wit-bindgen's runtime.
///
/// # Safety
/// Called by the host per the canonical ABI: `old` is null or a block of
/// `old_len` bytes this function returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    unsafe {
        let block = ALLOCATOR.alloc(Layout::from_size_align_unchecked(new_len, align));
        if block.is_null() {
            core::arch::wasm32::unreachable();
        }
        if !old.is_null() {
            core::ptr::copy_nonoverlapping(old, block, old_len.min(new_len));
        }
        block
    }
}
