//! The guest's allocator: small blocks freed are kept by size class and handed out again.
//!
//! A function that returns a `String` or a `Vec` per record allocates and frees one block
//! per record. Behind Rust's global allocator a WASM guest has wasi-libc's `malloc`, reached
//! through three layers of shims that LTO cannot inline (wasi-libc is C): about 5% of a
//! `map(uppercase)` run. Here a block of up to [`LARGEST`] bytes that is freed goes onto a
//! list of free blocks of its size class, and the next allocation of that class takes it
//! back in a few instructions. Each list keeps at most [`KEPT`] blocks (about 1 MiB in all
//! at most); further blocks, larger ones and those of a larger alignment go to `malloc` and
//! `free` as before, so memory freed is always reused and a guest that runs for a job's
//! life does not grow by what it frees.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Blocks are kept in classes of this many bytes.
const GRANULE: usize = 16;
/// The largest block kept.
const LARGEST: usize = 256;
/// The number of size classes.
const CLASSES: usize = LARGEST / GRANULE;
/// The most blocks kept free in one class.
const KEPT: u32 = 512;
/// The largest alignment a kept block serves: what `malloc` gives every block.
const ALIGN: usize = 8;

/// A free block, holding the next free block of its class.
struct Free {
    next: *mut Free,
}

/// One size class's free blocks.
#[derive(Clone, Copy)]
struct List {
    head: *mut Free,
    len: u32,
}

/// Rust's global allocator over the system allocator, with small freed blocks kept by
/// size class. Not thread-safe: a component instance runs on one thread.
pub struct SizeClasses {
    lists: UnsafeCell<[List; CLASSES]>,
}

// SAFETY: a WASM guest without the atomics feature has one thread: the lists are never
// touched from two threads.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    /// No block kept yet.
    pub const fn new() -> Self {
        Self {
            lists: UnsafeCell::new(
                [List {
                    head: ptr::null_mut(),
                    len: 0,
                }; CLASSES],
            ),
        }
    }

    /// How many blocks are kept free, for tests.
    #[cfg(test)]
    fn kept(&self) -> usize {
        // SAFETY: one thread (see the `Sync` impl); no list is borrowed across calls.
        unsafe {
            (*self.lists.get())
                .iter()
                .map(|list| list.len as usize)
                .sum()
        }
    }
}

impl Default for SizeClasses {
    fn default() -> Self {
        Self::new()
    }
}

/// The size class of `layout`, if its blocks are kept.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    (layout.size() <= LARGEST && layout.align() <= ALIGN)
        .then(|| layout.size().saturating_sub(1) / GRANULE)
}

/// The layout every block of `class` is allocated with.
#[inline]
fn class_layout(class: usize) -> Layout {
    Layout::from_size_align((class + 1) * GRANULE, ALIGN).expect("a small layout")
}

// SAFETY: every block handed out is one the system allocator made for at least the size
// and alignment asked for (a kept block of a class was made with its class's layout, which
// covers every layout of the class), and is handed out once until it is freed.
unsafe impl GlobalAlloc for SizeClasses {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: one thread (see the `Sync` impl), and no list is borrowed past this call.
        let list = unsafe { &mut (*self.lists.get())[class] };
        if list.head.is_null() {
            // SAFETY: a layout of non-zero size.
            return unsafe { System.alloc(class_layout(class)) };
        }
        let block = list.head;
        // SAFETY: a kept block holds the next one.
        list.head = unsafe { (*block).next };
        list.len -= 1;
        block.cast()
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: allocated by the system allocator with this layout (see `alloc`).
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: as in `alloc`.
        let list = unsafe { &mut (*self.lists.get())[class] };
        if list.len == KEPT {
            // SAFETY: every block of a class is allocated with the class's layout.
            return unsafe { System.dealloc(block, class_layout(class)) };
        }
        let free = block.cast::<Free>();
        // SAFETY: the block is at least 16 bytes, 8-aligned, and now the allocator's.
        unsafe { free.write(Free { next: list.head }) };
        list.head = free;
        list.len += 1;
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align(new_size, layout.align());
        match (class_of(layout), new_layout) {
            // The same block serves the new size.
            (Some(class), Ok(new)) if class_of(new) == Some(class) => block,
            (None, Ok(new)) if class_of(new).is_none() => {
                // SAFETY: allocated by the system allocator with `layout`.
                unsafe { System.realloc(block, layout, new_size) }
            }
            _ => {
                // SAFETY: the caller's promises, as `GlobalAlloc::realloc`'s default keeps them.
                unsafe {
                    let new =
                        self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                    if !new.is_null() {
                        ptr::copy_nonoverlapping(block, new, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_small_block_is_handed_out_again_for_its_class_only() {
        let classes = SizeClasses::new();
        let word = Layout::from_size_align(10, 1).unwrap();
        let line = Layout::from_size_align(80, 1).unwrap();
        // SAFETY: each block is freed once, with the layout it was allocated with.
        unsafe {
            let first = classes.alloc(word);
            first.write_bytes(7, 10);
            classes.dealloc(first, word);
            assert_eq!(classes.kept(), 1);
            let same_class = Layout::from_size_align(16, 8).unwrap();
            let again = classes.alloc(same_class);
            assert_eq!(again, first, "a block of the same class is reused");
            assert_eq!(classes.kept(), 0);
            let other = classes.alloc(line);
            assert_ne!(other, first);
            classes.dealloc(other, line);
            classes.dealloc(again, same_class);
            assert_eq!(classes.kept(), 2);
            let large = Layout::from_size_align(4096, 8).unwrap();
            let big = classes.alloc(large);
            classes.dealloc(big, large);
            let aligned = Layout::from_size_align(32, 64).unwrap();
            let wide = classes.alloc(aligned);
            assert_eq!(wide as usize % 64, 0);
            classes.dealloc(wide, aligned);
            assert_eq!(classes.kept(), 2, "large or aligned blocks are not kept");
        }
    }

    #[test]
    fn a_class_keeps_a_bounded_number_of_blocks() {
        let classes = SizeClasses::new();
        let layout = Layout::from_size_align(48, 8).unwrap();
        // SAFETY: each block is freed once, with the layout it was allocated with.
        unsafe {
            let blocks: Vec<_> = (0..KEPT + 100).map(|_| classes.alloc(layout)).collect();
            for &block in &blocks {
                classes.dealloc(block, layout);
            }
            assert_eq!(classes.kept(), KEPT as usize);
            let again: Vec<_> = (0..KEPT + 100).map(|_| classes.alloc(layout)).collect();
            assert_eq!(classes.kept(), 0);
            for block in again {
                classes.dealloc(block, layout);
            }
        }
    }

    #[test]
    fn reallocating_keeps_the_bytes_across_classes_and_sizes() {
        let classes = SizeClasses::new();
        // SAFETY: each block is reallocated or freed with the layout it has.
        unsafe {
            let mut layout = Layout::from_size_align(1, 1).unwrap();
            let mut block = classes.alloc(layout);
            block.write(0);
            for size in [2, 16, 17, 100, 256, 257, 5000, 300, 200, 3] {
                block = classes.realloc(block, layout, size);
                let kept = layout.size().min(size);
                for at in 0..kept {
                    assert_eq!(*block.add(at), at as u8, "byte {at} at size {size}");
                }
                for at in kept..size {
                    block.add(at).write(at as u8);
                }
                layout = Layout::from_size_align(size, 1).unwrap();
            }
            classes.dealloc(block, layout);
        }
    }
}
