//! A plugin's allocator: a call's small allocations come from a region that is reused
//! whole once nothing in it is in use, instead of from the general-purpose `malloc`.
//!
//! Every call into a plugin allocates: the host writes each string of the call's values
//! into the instance's memory through `cabi_realloc`, the plugin builds its answer, and
//! all of it is freed when the call is over. With the target's `malloc` (wasi-libc's
//! dlmalloc) those allocations and frees were about a fifth of the plugins' own time in a
//! payment. Here they are a bump of a pointer and a count.
//!
//! How it works: after the plugin's `init` (the export macros wrap it in
//! [`during_init`]), an allocation of at most [`LARGEST`] bytes is taken from the end of
//! a [`REGION`]-byte region and counted. A free of one counts down, and when the count is
//! zero (after a call, once the host has read its results and they have been freed) the
//! whole region is free again. Anything else goes to the system allocator: allocations
//! during `init` (the plugin's state lives from one call to the next), larger ones, and
//! any that do not fit.
//!
//! What an *import* returns into the plugin's memory (a host call's list or string) never
//! comes from the region: this module exports `cabi_import_realloc`, which the component
//! model uses for imports in place of `cabi_realloc`, and it allocates from the system
//! allocator. wasi-libc frees some of those results itself with `free()` (the random bytes
//! behind `getentropy`, for one), which on memory from the region corrupted its heap.
//!
//! Memory in the region is reused only when every allocation in it has been freed, so a
//! value a plugin keeps from one call to the next (in a `static`, say) is never
//! overwritten: it keeps the region from being reused, and later calls allocate from the
//! system allocator, as without this allocator.
//!
//! Opt in with one line in the plugin crate:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: payproxy_plugin_sdk::arena::CallArena = payproxy_plugin_sdk::arena::CallArena;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Bytes in the region (taken from the system allocator at the first allocation after
/// `init`).
pub const REGION: usize = 128 * 1024;

/// The largest allocation taken from the region; larger ones go to the system allocator,
/// so one large body does not use up the region for the small values beside it.
pub const LARGEST: usize = 32 * 1024;

/// The allocator. Install it with `#[global_allocator]` (module docs).
pub struct CallArena;

/// The region: `[base, end)`, allocated up to `top`, `live` allocations in it.
#[derive(Debug)]
struct Bump {
    base: usize,
    end: usize,
    top: usize,
    live: usize,
}

impl Bump {
    const fn empty() -> Bump {
        Bump {
            base: 0,
            end: 0,
            top: 0,
            live: 0,
        }
    }

    fn start(&mut self, base: usize, len: usize) {
        *self = Bump {
            base,
            end: base + len,
            top: base,
            live: 0,
        };
    }

    fn contains(&self, address: usize) -> bool {
        self.base <= address && address < self.end
    }

    /// The address of `layout` taken from the region, or `None` (too large, or no room).
    fn take(&mut self, layout: Layout) -> Option<usize> {
        if self.base == 0 || layout.size() > LARGEST {
            return None;
        }
        let start = self.top.checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let end = start.checked_add(layout.size())?;
        if end > self.end {
            return None;
        }
        self.top = end;
        self.live += 1;
        Some(start)
    }

    /// Give back the allocation at `address` of `size` bytes: the region is free again when
    /// it was the last one, and the end of the region when it was the latest.
    fn give(&mut self, address: usize, size: usize) {
        self.live -= 1;
        if self.live == 0 {
            self.top = self.base;
        } else if address + size == self.top {
            self.top = address;
        }
    }

    /// Resize the allocation at `address` where it is, when it is the latest and the new
    /// size fits.
    fn resize(&mut self, address: usize, size: usize, new_size: usize) -> bool {
        let fits = address + size == self.top
            && new_size <= LARGEST
            && address
                .checked_add(new_size)
                .is_some_and(|end| end <= self.end);
        if fits {
            self.top = address + new_size;
        }
        fits
    }
}

struct State {
    bump: Bump,
    /// Set when the first `init` has returned: from then on the region is used.
    armed: bool,
    /// Inside `init` or an import's realloc: allocations go to the system allocator.
    outside: u32,
    /// The region could not be allocated: not tried again.
    unavailable: bool,
}

thread_local! {
    // A component instance is single-threaded. Const-initialised and without a destructor,
    // so reaching it never allocates (this is the allocator).
    static STATE: UnsafeCell<State> = const {
        UnsafeCell::new(State {
            bump: Bump::empty(),
            armed: false,
            outside: 0,
            unavailable: false,
        })
    };
}

/// Run `f` with the state. No allocation happens inside `f` (the system allocator's calls
/// do not come back here), so the exclusive borrow is never taken twice.
fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    // SAFETY: the state is this thread's, and `f` does not re-enter the allocator.
    STATE.with(|state| f(unsafe { &mut *state.get() }))
}

/// Run a plugin's `init`: what it allocates goes to the system allocator (it is the
/// plugin's state, kept from call to call), and calls after it use the region.
pub fn during_init<R>(f: impl FnOnce() -> R) -> R {
    let result = outside_region(f);
    with_state(|s| s.armed = true);
    result
}

/// Run `f` with every allocation going to the system allocator.
fn outside_region<R>(f: impl FnOnce() -> R) -> R {
    with_state(|s| s.outside += 1);
    let result = f();
    with_state(|s| s.outside -= 1);
    result
}

/// The realloc the component model uses for what an *import* returns into the plugin's
/// memory (`wit-component` prefers this export to `cabi_realloc` for imports). wasi-libc
/// frees some of those results itself, with `free()` (the random bytes behind
/// `getentropy`, a stream's read), so they must come from the system allocator, never from
/// the region. It is std's `cabi_realloc` (on the global allocator) with the region off, so
/// a plugin with another `#[global_allocator]` gets its own allocator's memory here.
///
/// # Safety
///
/// Called by the canonical ABI only, with its `realloc` contract: `old_ptr` and
/// `old_len` from an earlier call with the same `align`, or zero.
#[cfg(target_arch = "wasm32")]
#[export_name = "cabi_import_realloc"]
pub unsafe extern "C" fn cabi_import_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    extern "C" {
        /// std's canonical-ABI realloc (on the global allocator), which exports use.
        fn cabi_realloc(old_ptr: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8;
    }
    // SAFETY: the caller's arguments, passed on unchanged under the same contract.
    outside_region(|| unsafe { cabi_realloc(old_ptr, old_len, align, new_len) })
}

/// Where an allocation comes from, decided with the state borrowed.
enum Source {
    Region(usize),
    System,
    /// The region is to be created first (outside the borrow: it is a system allocation).
    Create,
}

unsafe impl GlobalAlloc for CallArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let source = with_state(|s| {
            if !s.armed || s.outside > 0 || layout.size() > LARGEST {
                return Source::System;
            }
            if s.bump.base == 0 {
                return if s.unavailable {
                    Source::System
                } else {
                    Source::Create
                };
            }
            s.bump.take(layout).map_or(Source::System, Source::Region)
        });
        match source {
            Source::Region(address) => address as *mut u8,
            // SAFETY: `layout` is the caller's, valid for `alloc`.
            Source::System => unsafe { System.alloc(layout) },
            Source::Create => {
                // SAFETY: a non-zero size and a power-of-two alignment.
                let region = unsafe { System.alloc(Layout::from_size_align_unchecked(REGION, 16)) };
                let taken = with_state(|s| {
                    if region.is_null() {
                        s.unavailable = true;
                        return None;
                    }
                    s.bump.start(region as usize, REGION);
                    s.bump.take(layout)
                });
                match taken {
                    Some(address) => address as *mut u8,
                    // SAFETY: as above.
                    None => unsafe { System.alloc(layout) },
                }
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let mine = with_state(|s| {
            let mine = s.bump.contains(ptr as usize);
            if mine {
                s.bump.give(ptr as usize, layout.size());
            }
            mine
        });
        if !mine {
            // SAFETY: not from the region, so from `System.alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (mine, resized) = with_state(|s| {
            let mine = s.bump.contains(ptr as usize);
            (
                mine,
                mine && s.bump.resize(ptr as usize, layout.size(), new_size),
            )
        });
        if !mine {
            // SAFETY: a system allocation, resized by the system allocator.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if resized {
            return ptr;
        }
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not overlap (the
            // old one is still counted, so the new one is elsewhere).
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// The byte at `i` of the block written at `step`: a pattern no other step repeats.
    fn pattern(step: u32, i: usize) -> u8 {
        (step.wrapping_mul(2_654_435_761) >> (8 * (i % 4))) as u8 ^ (i as u8)
    }

    fn write(p: *mut u8, size: usize, step: u32) {
        for i in 0..size {
            unsafe { *p.add(i) = pattern(step, i) };
        }
    }

    fn intact(p: *mut u8, size: usize, step: u32) -> bool {
        (0..size).all(|i| unsafe { *p.add(i) } == pattern(step, i))
    }

    #[test]
    fn bump_reuses_the_region_only_when_everything_in_it_is_free() {
        let mut bump = Bump::empty();
        assert_eq!(bump.take(layout(8, 8)), None, "no region yet");
        bump.start(4096, 1024);
        let a = bump.take(layout(10, 1)).unwrap();
        let b = bump.take(layout(16, 16)).unwrap();
        assert_eq!(a, 4096);
        assert_eq!(b, 4096 + 16, "aligned up");
        bump.give(a, 10);
        // `b` still lives: nothing is reused under it.
        let c = bump.take(layout(4, 4)).unwrap();
        assert!(c >= b + 16);
        bump.give(c, 4);
        assert_eq!(bump.top, b + 16, "the latest one is given back to the end");
        bump.give(b, 16);
        assert_eq!(
            (bump.live, bump.top),
            (0, 4096),
            "all free: the region starts again"
        );
    }

    #[test]
    fn bump_aligns_addresses_not_offsets() {
        // A region whose base is only 8-aligned: a 64-aligned block must be 64-aligned as
        // an address, not as an offset from the base.
        let mut bump = Bump::empty();
        bump.start(4096 + 8, 1024);
        let a = bump.take(layout(1, 1)).unwrap();
        let b = bump.take(layout(8, 64)).unwrap();
        let c = bump.take(layout(200, 128)).unwrap();
        assert_eq!(a, 4104);
        assert_eq!((b % 64, c % 128), (0, 0));
        assert!(b > a && c >= b + 8);
    }

    #[test]
    fn bump_refuses_what_does_not_fit_or_is_large() {
        let mut bump = Bump::empty();
        bump.start(4096, 64);
        assert_eq!(bump.take(layout(LARGEST + 1, 1)), None);
        assert!(bump.take(layout(60, 1)).is_some());
        assert_eq!(bump.take(layout(8, 1)), None, "full");
        assert_eq!(bump.live, 1, "a refusal counts nothing");
    }

    #[test]
    fn bump_resizes_the_latest_allocation_in_place() {
        let mut bump = Bump::empty();
        bump.start(4096, 256);
        let a = bump.take(layout(16, 8)).unwrap();
        assert!(bump.resize(a, 16, 64));
        assert_eq!(bump.top, a + 64);
        let b = bump.take(layout(8, 8)).unwrap();
        assert!(!bump.resize(a, 64, 128), "not the latest any more");
        assert!(!bump.resize(b, 8, 1024), "past the end");
        assert!(bump.resize(b, 8, 4), "shrinking the latest");
    }

    /// Every live allocation keeps its bytes, whatever the order of frees, resizes and new
    /// allocations, in the region and out of it (each test runs on its own thread, with its
    /// own state).
    #[test]
    fn allocations_keep_their_bytes() {
        let arena = CallArena;
        during_init(|| ());
        let mut live: Vec<(*mut u8, Layout, u32)> = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut in_region, mut outside) = (0, 0);
        for step in 0..20_000u32 {
            let roll = next();
            if step % 500 == 499 {
                // The end of a call: everything is freed, and the region starts again.
                for (p, l, fill) in live.drain(..) {
                    assert!(intact(p, l.size(), fill), "bytes kept");
                    unsafe { arena.dealloc(p, l) };
                }
                with_state(|s| assert_eq!((s.bump.live, s.bump.top), (0, s.bump.base)));
                continue;
            }
            if live.is_empty() || (roll % 2 == 0 && live.len() < 64) {
                let size = match roll % 7 {
                    0 => 40 * 1024,
                    1 => 1 + (roll >> 8) as usize % 4096,
                    _ => 1 + (roll >> 8) as usize % 200,
                };
                let align = 1 << ((roll >> 20) % 8);
                let l = layout(size, align);
                let p = unsafe { arena.alloc(l) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                let fill = step;
                write(p, size, fill);
                if with_state(|s| s.bump.contains(p as usize)) {
                    in_region += 1;
                } else {
                    outside += 1;
                }
                live.push((p, l, fill));
            } else {
                let i = (roll >> 8) as usize % live.len();
                let (p, l, fill) = live.swap_remove(i);
                assert!(intact(p, l.size(), fill), "bytes kept");
                if roll % 2 == 0 {
                    let new_size = 1 + (roll >> 16) as usize % 3000;
                    let q = unsafe { arena.realloc(p, l, new_size) };
                    assert_eq!(q as usize % l.align(), 0, "realloc keeps the alignment");
                    assert!(
                        intact(q, l.size().min(new_size), fill),
                        "bytes kept by realloc"
                    );
                    let nl = layout(new_size, l.align());
                    write(q, new_size, step);
                    live.push((q, nl, step));
                } else {
                    unsafe { arena.dealloc(p, l) };
                }
            }
        }
        for (p, l, fill) in live.drain(..) {
            assert!(intact(p, l.size(), fill));
            unsafe { arena.dealloc(p, l) };
        }
        assert!(
            in_region > 1000 && outside > 1000,
            "{in_region} / {outside}"
        );
        with_state(|s| assert_eq!((s.bump.live, s.bump.top), (0, s.bump.base)));
    }

    #[test]
    fn nothing_comes_from_the_region_before_or_during_init() {
        let arena = CallArena;
        let l = layout(32, 8);
        let before = unsafe { arena.alloc(l) };
        let during = during_init(|| unsafe { arena.alloc(l) });
        let after = unsafe { arena.alloc(l) };
        with_state(|s| {
            assert!(!s.bump.contains(before as usize));
            assert!(!s.bump.contains(during as usize));
            assert!(s.bump.contains(after as usize));
        });
        for p in [before, during, after] {
            unsafe { arena.dealloc(p, l) };
        }
    }

    #[test]
    fn a_kept_allocation_is_never_overwritten() {
        // A value a plugin keeps between calls holds the region: later calls' allocations
        // go after it (and to the system allocator once the region is full).
        let arena = CallArena;
        during_init(|| ());
        let l = layout(1024, 8);
        let kept = unsafe { arena.alloc(l) };
        unsafe { std::ptr::write_bytes(kept, 0xAB, 1024) };
        for _ in 0..1000 {
            let p = unsafe { arena.alloc(l) };
            unsafe { std::ptr::write_bytes(p, 0, 1024) };
            unsafe { arena.dealloc(p, l) };
        }
        let bytes = unsafe { std::slice::from_raw_parts(kept, 1024) };
        assert!(bytes.iter().all(|&b| b == 0xAB));
        unsafe { arena.dealloc(kept, l) };
    }
}
