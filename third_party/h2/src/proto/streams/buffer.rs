use slab::Slab;

/// Buffers frames for multiple streams.
#[derive(Debug)]
pub struct Buffer<T> {
    slab: Slab<Slot<T>>,
}

/// A sequence of frames in a `Buffer`
#[derive(Debug)]
pub struct Deque {
    indices: Option<Indices>,
}

/// Tracks the head & tail for a sequence of frames in a `Buffer`.
#[derive(Debug, Default, Copy, Clone)]
struct Indices {
    head: usize,
    tail: usize,
}

#[derive(Debug)]
pub(super) struct Slot<T> {
    value: T,
    next: Option<usize>,
}

impl<T> Buffer<T> {
    pub fn new() -> Self {
        Buffer { slab: Slab::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

impl Deque {
    pub fn new() -> Self {
        Deque { indices: None }
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_none()
    }

    pub fn push_back<T: Spare>(&mut self, buf: &mut Buffer<T>, value: T) {
        if buf.slab.capacity() == 0 {
            buf.slab = T::take();
        }
        let key = buf.slab.insert(Slot { value, next: None });

        match self.indices {
            Some(ref mut idxs) => {
                buf.slab[idxs.tail].next = Some(key);
                idxs.tail = key;
            }
            None => {
                self.indices = Some(Indices {
                    head: key,
                    tail: key,
                });
            }
        }
    }

    pub fn push_front<T: Spare>(&mut self, buf: &mut Buffer<T>, value: T) {
        if buf.slab.capacity() == 0 {
            buf.slab = T::take();
        }
        let key = buf.slab.insert(Slot { value, next: None });

        match self.indices {
            Some(ref mut idxs) => {
                buf.slab[key].next = Some(idxs.head);
                idxs.head = key;
            }
            None => {
                self.indices = Some(Indices {
                    head: key,
                    tail: key,
                });
            }
        }
    }

    pub fn pop_front<T: Spare>(&mut self, buf: &mut Buffer<T>) -> Option<T> {
        match self.indices {
            Some(mut idxs) => {
                let mut slot = buf.slab.remove(idxs.head);
                if buf.slab.is_empty() {
                    // Nothing buffered for any stream: give the room back (an idle
                    // connection then holds none).
                    T::give(std::mem::take(&mut buf.slab));
                }

                if idxs.head == idxs.tail {
                    assert!(slot.next.is_none());
                    self.indices = None;
                } else {
                    idxs.head = slot.next.take().unwrap();
                    self.indices = Some(idxs);
                }

                Some(slot.value)
            }
            None => None,
        }
    }
}

/// Where a `Buffer`'s slab goes when it empties and where the next one comes from
/// (kube-crl-proxy's patch): by default it is freed, and grown again from nothing.
pub(super) trait Spare: Sized {
    fn take() -> Slab<Slot<Self>> {
        Slab::new()
    }

    fn give(slab: Slab<Slot<Self>>) {
        drop(slab);
    }
}

impl<B> Spare for crate::frame::Frame<B> {}

/// Received frames (`Event`s): emptied slabs go to a stack of at most 16 per thread, from
/// which the next connection on the thread that buffers one takes it.
impl Spare for super::recv::Event {
    fn take() -> Slab<Slot<Self>> {
        RECV_SPARE
            .try_with(|s| s.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn give(slab: Slab<Slot<Self>>) {
        if slab.capacity() == 0 {
            return;
        }
        let _ = RECV_SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_KEEP {
                s.push(slab);
            }
        });
    }
}

const SPARE_KEEP: usize = 16;

thread_local! {
    static RECV_SPARE: std::cell::RefCell<Vec<Slab<Slot<super::recv::Event>>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}
