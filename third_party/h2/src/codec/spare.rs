//! Spare codec buffers, a small stack per thread and kind (kube-crl-proxy's patch). A
//! connection gives its write or read buffer back here when it has nothing buffered, and the
//! next connection on the thread that needs one takes it: an idle connection holds no buffer,
//! and a busy one does not pay an allocation and a free per flush or read cycle.

use bytes::BytesMut;
use std::cell::RefCell;
use std::thread::LocalKey;

/// Buffers kept per thread and kind, at most.
const KEEP: usize = 16;

/// A read buffer whose room has shrunk below this (its start split off into frames that are
/// still alive, so that it cannot be reclaimed) is dropped instead of kept.
const MIN_READ_ROOM: usize = 1024;

type Stack = RefCell<Vec<BytesMut>>;

thread_local! {
    /// 16 KiB write buffers.
    static WRITE: Stack = const { RefCell::new(Vec::new()) };
    /// Read buffers (8 KiB when new).
    static READ: Stack = const { RefCell::new(Vec::new()) };
}

fn pop(stack: &'static LocalKey<Stack>) -> Option<BytesMut> {
    stack.try_with(|s| s.borrow_mut().pop()).ok().flatten()
}

fn push(stack: &'static LocalKey<Stack>, buf: BytesMut) {
    let _ = stack.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEEP {
            s.push(buf);
        }
    });
}

/// An empty write buffer with room for `capacity` bytes: a spare one, or a new one.
pub(crate) fn take_write(capacity: usize) -> BytesMut {
    pop(&WRITE).unwrap_or_else(|| BytesMut::with_capacity(capacity))
}

/// Gives a write buffer back (emptied).
pub(crate) fn give_write(mut buf: BytesMut) {
    buf.clear();
    push(&WRITE, buf);
}

/// An empty read buffer: a spare one (with its whole room reclaimed if the frames split off
/// it are gone by now), or a new one with room for `capacity` bytes.
pub(crate) fn take_read(capacity: usize) -> BytesMut {
    match pop(&READ) {
        Some(mut buf) => {
            let _ = buf.try_reclaim(capacity);
            buf
        }
        None => BytesMut::with_capacity(capacity),
    }
}

/// Gives a read buffer back (emptied), unless what is left of its room is too small to be
/// worth keeping.
pub(crate) fn give_read(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() >= MIN_READ_ROOM {
        push(&READ, buf);
    }
}
