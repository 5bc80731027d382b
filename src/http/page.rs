//! A page of `GET /api/events`, written as it is read.
//!
//! Owns: the bound on pages being written at once, and a reader over the
//! page's messages. The messages are the log's own shared buffers, so a page
//! costs its list of handles, not a copy of its JSON: a slow reader pins at
//! most one page of outcomes, even once the log has forgotten them.
//!
//! Must not know: how the log chose the page.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes};

use crate::delivery::Broadcast;

/// Most outcomes one page holds, whatever `limit` asks: a client continues
/// with `since=` the last `seq` it got.
pub const MAX_PAGE_OUTCOMES: usize = 10_000;

/// Most bytes of JSON one page holds (at least one outcome is always given,
/// however large): with [`MAX_PAGES_IN_FLIGHT`] it bounds what slow readers
/// can pin to 128 MiB, whatever producers post.
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Pages written at once; one more is answered 503 with `Retry-After`.
pub const MAX_PAGES_IN_FLIGHT: usize = 16;

/// The count of pages being written.
#[derive(Debug, Default)]
pub struct PageSlots(Arc<AtomicUsize>);

/// A page's place under [`MAX_PAGES_IN_FLIGHT`], given back when dropped.
#[derive(Debug)]
pub struct PageSlot(Arc<AtomicUsize>);

impl PageSlots {
    /// A place for one more page, if fewer than the most are being written.
    pub fn take(&self) -> Option<PageSlot> {
        let taken = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_PAGES_IN_FLIGHT).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| PageSlot(Arc::clone(&self.0)))
    }
}

impl Drop for PageSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The page as a JSON array, read piece by piece from the shared buffers.
#[derive(Debug)]
pub struct Page {
    pieces: VecDeque<Bytes>,
    _slot: PageSlot,
}

impl Page {
    /// The array of `messages`' JSON, holding `slot` until it is dropped.
    pub fn new(messages: Vec<Broadcast>, slot: PageSlot) -> Self {
        let mut pieces = VecDeque::with_capacity(messages.len() * 2 + 1);
        pieces.push_back(Bytes::from_static(b"["));
        for (i, message) in messages.into_iter().enumerate() {
            if i > 0 {
                pieces.push_back(Bytes::from_static(b","));
            }
            pieces.push_back(message.json);
        }
        pieces.push_back(Bytes::from_static(b"]"));
        Page {
            pieces,
            _slot: slot,
        }
    }

    /// Bytes of the whole array.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }
}

impl Read for Page {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(piece) = self.pieces.front_mut() {
            if piece.is_empty() {
                self.pieces.pop_front();
                continue;
            }
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            piece.advance(n);
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Kind;

    fn outcome(json: &'static str) -> Broadcast {
        Broadcast {
            kind: Kind::Event,
            seq: 1,
            status: "on-time",
            json: Bytes::from_static(json.as_bytes()),
        }
    }

    #[test]
    fn a_page_reads_as_one_json_array_in_small_pieces() {
        let slots = PageSlots::default();
        let slot = slots.take().expect("a slot");
        let mut page = Page::new(vec![outcome("{\"a\":1}"), outcome("{}")], slot);
        assert_eq!(page.len(), 12);
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = page.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"[{\"a\":1},{}]");
        let empty = Page::new(Vec::new(), slots.take().expect("a slot"));
        assert_eq!(empty.len(), 2);
    }

    #[test]
    fn pages_in_flight_are_bounded_and_given_back() {
        let slots = PageSlots::default();
        let held: Vec<_> = (0..MAX_PAGES_IN_FLIGHT)
            .map(|_| slots.take().expect("room"))
            .collect();
        assert!(slots.take().is_none());
        drop(held);
        assert!(slots.take().is_some());
    }
}
