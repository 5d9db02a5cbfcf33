//! The pages of a store's fiber stack an idle instance hands back to the system.
//!
//! wasmtime runs every async call on a fiber whose stack comes from the pooling
//! allocator; when the call returns, the stack stays cached in the store for the next
//! call (wasmtime 48 has no public way to give it back before the store drops), and the
//! pages the call touched stay resident: 4 KiB of every idle instance's memory. While
//! an instance idles (the kernel parks it), those pages hold nothing anyone reads again:
//! the next call starts a new fiber that writes its first frame afresh. So:
//!
//! * Inside each call (wasmtime's call hook as it enters wasm, and the epoch callback
//!   deeper in a long call) the instance notes an address on the current stack. These
//!   run on the fiber, so the addresses seen are inside its stack.
//! * Once the call has run to its end (its future completed, so the fiber finished and
//!   its stack went back to the store's cache), the noted range is *settled*: it still
//!   belongs to this store's cached stack and no code runs on it.
//! * [`FiberPages::release`] tells the system it may drop those pages
//!   (`MADV_DONTNEED`: they read as zeros when touched again), exactly as the pooling
//!   allocator itself decommits a stack it takes back.
//!
//! A call that did not run to its end (its future dropped: the stack went back to the
//! pool and may already run another store's fiber) leaves nothing settled, and nothing
//! is released until a later call has run to its end.

use std::ops::Range;

/// Where this store's fiber stack was seen during the calls since the last release.
#[derive(Debug, Default)]
pub(crate) struct FiberPages {
    /// The lowest and highest stack addresses noted inside the current call.
    seen: Option<Range<usize>>,
    /// Whether the call in which `seen` was noted has run to its end.
    settled: bool,
}

/// The size of each call's fiber stack (`Config::async_stack_size`): the most a
/// release hands back.
pub(crate) const STACK_SIZE: usize = 2 << 20;

impl FiberPages {
    /// Before a call into the guest: whatever was noted before may belong to a stack
    /// this call will not use (a cancelled call's went back to the pool).
    pub(crate) fn begin(&mut self) {
        *self = Self::default();
    }

    /// Inside a call, on its fiber: notes the current stack address.
    #[inline(never)]
    pub(crate) fn note(&mut self) {
        let probe = 0u8;
        let here = std::ptr::from_ref(std::hint::black_box(&probe)).addr();
        self.seen = Some(match self.seen.take() {
            Some(r) => r.start.min(here)..r.end.max(here + 1),
            None => here..here + 1,
        });
    }

    /// After a call whose future completed: the fiber finished, its stack is back in
    /// the store's cache.
    pub(crate) fn settle(&mut self) {
        self.settled = self.seen.is_some();
    }

    /// Hands the settled pages back to the system; returns how many bytes. Call only
    /// while no call into the store is in flight (`&mut` of the instance).
    pub(crate) fn release(&mut self) -> usize {
        let settled = std::mem::take(&mut self.settled);
        let Some(range) = self.seen.take().filter(|_| settled) else {
            return 0;
        };
        let Some(pages) = whole_pages(&range) else {
            return 0;
        };
        // SAFETY: `pages` lies within the store's cached fiber stack: every address in
        // `range` was on that stack during a call that ran to its end (see the module
        // note), and a stack's top and bottom are page-aligned (the pooling allocator
        // lays stacks out in page-sized slots), so the pages holding the lowest and the
        // highest address and all between them are the stack's own. No fiber runs on it
        // (the caller holds the instance exclusively between calls) and the next fiber
        // on it writes its frames before reading any: dropping the pages (they come back
        // zeroed) is what wasmtime's allocator does when it takes the stack back.
        unsafe { discard(pages.start, pages.len()) }
    }
}

/// The pages that hold `range`, when they are few enough to be one fiber stack's.
fn whole_pages(range: &Range<usize>) -> Option<Range<usize>> {
    let page = page_size();
    let start = range.start & !(page - 1);
    let end = (range.end - 1) & !(page - 1);
    let end = end.checked_add(page)?;
    (start > 0 && end > start && end - start <= STACK_SIZE).then_some(start..end)
}

fn page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .unwrap_or(4096)
    }
    #[cfg(not(unix))]
    {
        4096
    }
}

/// Drops the resident pages of `[start, start + len)`; returns `len`, or 0 if the
/// system refused.
///
/// # Safety
/// The range must be whole pages of a private anonymous mapping that nothing reads
/// before writing it.
unsafe fn discard(start: usize, len: usize) -> usize {
    #[cfg(unix)]
    {
        // SAFETY: as the caller promises.
        let rc = unsafe {
            libc::madvise(
                std::ptr::without_provenance_mut(start),
                len,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 { len } else { 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = (start, len);
        0
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A private anonymous mapping of `pages` pages, unmapped on drop.
    struct Mapping(*mut libc::c_void, usize);

    impl Mapping {
        fn new(pages: usize) -> Self {
            let len = pages * page_size();
            // SAFETY: a fresh anonymous mapping; checked below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            Self(ptr, len)
        }

        fn addr(&self, page: usize, offset: usize) -> usize {
            self.0.addr() + page * page_size() + offset
        }

        fn write(&self, page: usize) {
            // SAFETY: inside the mapping.
            unsafe { *self.0.cast::<u8>().add(page * page_size() + 7) = 0xAB };
        }

        fn read(&self, page: usize) -> u8 {
            // SAFETY: inside the mapping.
            unsafe { *self.0.cast::<u8>().add(page * page_size() + 7) }
        }

        fn resident(&self) -> Vec<bool> {
            let mut v = vec![0u8; self.1 / page_size()];
            // SAFETY: the vector has one byte per page of the mapping.
            let rc = unsafe { libc::mincore(self.0, self.1, v.as_mut_ptr()) };
            assert_eq!(rc, 0);
            v.iter().map(|b| b & 1 == 1).collect()
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.0, self.1) };
        }
    }

    fn seen(m: &Mapping, low: (usize, usize), high: (usize, usize)) -> FiberPages {
        FiberPages {
            seen: Some(m.addr(low.0, low.1)..m.addr(high.0, high.1) + 1),
            settled: true,
        }
    }

    #[test]
    fn a_settled_range_drops_the_pages_that_hold_it_and_no_other() {
        let m = Mapping::new(6);
        (0..6).for_each(|p| m.write(p));
        assert!(m.resident().iter().all(|r| *r));
        let mut pages = seen(&m, (2, 100), (3, 4000));
        assert_eq!(pages.release(), 2 * page_size());
        assert_eq!(m.resident(), [true, true, false, false, true, true]);
        assert_eq!(
            (m.read(2), m.read(3)),
            (0, 0),
            "dropped pages read as zeros"
        );
        assert_eq!(
            (m.read(1), m.read(4)),
            (0xAB, 0xAB),
            "their neighbours keep theirs"
        );
        assert_eq!(pages.release(), 0, "a range is released once");
    }

    #[test]
    fn nothing_is_released_unless_the_call_ran_to_its_end() {
        let m = Mapping::new(2);
        m.write(0);
        let mut pages = seen(&m, (0, 10), (0, 20));
        pages.settled = false;
        assert_eq!(pages.release(), 0);
        assert!(m.resident()[0]);
        // A new call forgets what the cancelled one saw.
        pages.begin();
        assert_eq!((pages.seen.clone(), pages.settled), (None, false));
        pages.settle();
        assert_eq!(
            pages.release(),
            0,
            "a call that noted nothing settles nothing"
        );
    }

    #[test]
    fn notes_widen_to_every_address_seen_and_a_range_wider_than_a_stack_is_refused() {
        let mut pages = FiberPages::default();
        pages.note();
        let first = pages.seen.clone().unwrap();
        fn deeper(p: &mut FiberPages) {
            let pad = std::hint::black_box([0u8; 512]);
            p.note();
            std::hint::black_box(pad);
        }
        deeper(&mut pages);
        let both = pages.seen.clone().unwrap();
        assert!(both.start <= first.start && both.end >= first.end);
        assert!(whole_pages(&(0x10_0000..0x10_0000 + STACK_SIZE + 1)).is_none());
        assert!(whole_pages(&(0..10)).is_none(), "no page at address zero");
        let one = whole_pages(&(0x10_0010..0x10_0020)).unwrap();
        assert_eq!(one.len(), page_size());
    }
}
