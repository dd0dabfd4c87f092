//! Spare codec buffers, a small stack per thread (kube-crl-proxy's patch). A connection gives
//! its write or read buffer back here when it has nothing buffered, and the next connection
//! on the thread that needs one takes it: an idle connection holds no buffer, and a busy one
//! does not pay an allocation and a free per flush or read cycle.

use bytes::BytesMut;
use std::cell::RefCell;

/// Buffers kept per thread, at most (16 KiB write and 8 KiB read buffers).
const KEEP: usize = 16;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `capacity` bytes: a spare one, or a new one.
pub(crate) fn take(capacity: usize) -> BytesMut {
    let spare = SPARE
        .try_with(|s| {
            let mut s = s.borrow_mut();
            let i = s.iter().rposition(|b| b.capacity() >= capacity)?;
            Some(s.swap_remove(i))
        })
        .ok()
        .flatten();
    spare.unwrap_or_else(|| BytesMut::with_capacity(capacity))
}

/// Gives a buffer back (emptied), if it still has room for `capacity` bytes (a read buffer
/// whose start was split off into frames has less); dropped when the thread already keeps
/// enough.
pub(crate) fn give(mut buf: BytesMut, capacity: usize) {
    buf.clear();
    if buf.capacity() < capacity {
        return;
    }
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEEP {
            s.push(buf);
        }
    });
}
