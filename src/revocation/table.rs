//! The revoked serials of one CRL: a sorted, compact table (32 bytes per entry) searched by
//! binary search, so a lookup costs the same whatever the CRL's size; and the merge of a
//! delta CRL's entries into its base's (RFC 5280 §5.2.4).

/// Serials up to this many octets (minimal two's complement) are stored inline: RFC 5280's
/// 20 octets of a positive serial, plus the sign octet a high first bit needs. Longer ones
/// go to a small overflow list.
const INLINE_SERIAL: usize = 21;

/// CRLReason removeFromCRL: in a delta CRL, the serial leaves the list.
pub const REMOVE_FROM_CRL: u8 = 8;

/// A serial of up to 21 octets as integers: (length, then the octets zero-padded on the
/// right, split 8 + 8 + 4 + 1). Equal keys are equal serials; the order is only for search.
type SerialKey = (u8, u64, u64, u32, u8);

/// One revoked serial, 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    a: u64,
    b: u64,
    c: u32,
    d: u8,
    len: u8,
    /// CRLReason code, 0xff when absent.
    reason: u8,
    revoked_at: i64,
}

impl Entry {
    fn key(&self) -> SerialKey {
        (self.len, self.a, self.b, self.c, self.d)
    }

    /// The serial's octets, as [`Serials::push`] took them.
    fn serial(&self) -> Vec<u8> {
        let mut s = Vec::with_capacity(INLINE_SERIAL);
        s.extend_from_slice(&self.a.to_be_bytes());
        s.extend_from_slice(&self.b.to_be_bytes());
        s.extend_from_slice(&self.c.to_be_bytes());
        s.push(self.d);
        s.truncate(usize::from(self.len));
        s
    }
}

fn inline_key(serial: &[u8]) -> Option<SerialKey> {
    if serial.len() > INLINE_SERIAL {
        return None;
    }
    let mut s = [0u8; INLINE_SERIAL];
    s[..serial.len()].copy_from_slice(serial);
    Some((
        serial.len() as u8,
        u64::from_be_bytes(s[0..8].try_into().ok()?),
        u64::from_be_bytes(s[8..16].try_into().ok()?),
        u32::from_be_bytes(s[16..20].try_into().ok()?),
        s[20],
    ))
}

/// Details of a revocation, for logs and `inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    pub revoked_at: i64,
    pub reason: Option<u8>,
}

/// The revoked serials of one CRL (or of one certificate issuer in an indirect CRL).
#[derive(Debug, Clone, Default)]
pub struct Serials {
    entries: Vec<Entry>,
    long_entries: Vec<(Vec<u8>, RevokedEntry)>,
}

impl Serials {
    /// Adds one serial (minimal two's complement, see [`super::crl::normalize_serial`]).
    pub fn push(&mut self, serial: &[u8], revoked_at: i64, reason: Option<u8>) {
        match inline_key(serial) {
            Some((len, a, b, c, d)) => {
                self.entries.push(Entry { a, b, c, d, len, reason: reason.unwrap_or(0xff), revoked_at })
            }
            None => self.long_entries.push((serial.to_vec(), RevokedEntry { revoked_at, reason })),
        }
    }

    /// Sorts and deduplicates once every serial is pushed.
    pub fn finish(&mut self) {
        // Most CRLs list serials in issuance order; sort only when needed.
        if !self.entries.is_sorted_by_key(Entry::key) {
            sort_entries(&mut self.entries);
        }
        self.entries.dedup_by(|a, b| a.key() == b.key());
        self.entries.shrink_to_fit();
    }

    pub fn with_capacity(n: usize) -> Self {
        Self { entries: Vec::with_capacity(n), long_entries: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.entries.len() + self.long_entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of a serial (minimal two's complement), if listed.
    pub fn lookup(&self, serial: &[u8]) -> Option<RevokedEntry> {
        match inline_key(serial) {
            Some(key) => self.entries.binary_search_by(|e| e.key().cmp(&key)).ok().map(|i| {
                let e = &self.entries[i];
                RevokedEntry { revoked_at: e.revoked_at, reason: (e.reason != 0xff).then_some(e.reason) }
            }),
            None => self.long_entries.iter().find(|(s, _)| s == serial).map(|(_, r)| r.clone()),
        }
    }

    /// The serials listed here and not in `old` (removeFromCRL entries are not listings):
    /// one walk over both sorted tables.
    pub fn added_since(&self, old: &Serials) -> Vec<Vec<u8>> {
        let listed = |e: &&Entry| e.reason != REMOVE_FROM_CRL;
        let mut added = Vec::new();
        let mut o = old.entries.iter().filter(listed).peekable();
        for e in self.entries.iter().filter(listed) {
            while o.next_if(|x| x.key() < e.key()).is_some() {}
            if o.peek().is_none_or(|x| x.key() != e.key()) {
                added.push(e.serial());
            }
        }
        for (serial, r) in &self.long_entries {
            if r.reason != Some(REMOVE_FROM_CRL)
                && !old.long_entries.iter().any(|(s, r)| s == serial && r.reason != Some(REMOVE_FROM_CRL))
            {
                added.push(serial.clone());
            }
        }
        added
    }

    /// This base's entries with a delta's applied: the delta's entries are added (or replace
    /// the base's), its removeFromCRL entries removed.
    pub fn merge(&self, delta: &Serials) -> Serials {
        let mut entries = Vec::with_capacity(self.entries.len() + delta.entries.len());
        let (mut b, mut d) = (self.entries.iter().peekable(), delta.entries.iter().peekable());
        loop {
            let next = match (b.peek(), d.peek()) {
                (None, None) => break,
                (Some(_), None) => b.next(),
                (None, Some(_)) => d.next(),
                (Some(x), Some(y)) => match x.key().cmp(&y.key()) {
                    std::cmp::Ordering::Less => b.next(),
                    std::cmp::Ordering::Greater => d.next(),
                    std::cmp::Ordering::Equal => {
                        b.next();
                        d.next()
                    }
                },
            };
            if let Some(e) = next.filter(|e| e.reason != REMOVE_FROM_CRL) {
                entries.push(*e);
            }
        }
        let mut long_entries = self.long_entries.clone();
        for (serial, r) in &delta.long_entries {
            long_entries.retain(|(s, _)| s != serial);
            if r.reason != Some(REMOVE_FROM_CRL) {
                long_entries.push((serial.clone(), r.clone()));
            }
        }
        Serials { entries, long_entries }
    }
}

/// Sorts by [`Entry::key`]. A large list (a CRL of random serials) is first distributed
/// by its key's leading part (length, top byte) and each bucket is sorted on its own, in
/// the cache: faster than one sort of a million entries, time a reload spends while it
/// shares the core with handshakes (loading the 1M-entry CRL takes about 20 % less CPU;
/// bench/README.md).
fn sort_entries(entries: &mut [Entry]) {
    if entries.len() < 1 << 16 {
        entries.sort_unstable_by_key(Entry::key);
        return;
    }
    // Ordered like the key: length first, then the top byte of `a`.
    let bucket = |e: &Entry| usize::from(e.len) << 8 | (e.a >> 56) as usize;
    let mut ends = vec![0usize; (INLINE_SERIAL + 1) << 8];
    for e in entries.iter() {
        ends[bucket(e)] += 1;
    }
    let mut next = Vec::with_capacity(ends.len());
    let mut sum = 0;
    for n in ends.iter_mut() {
        next.push(sum);
        sum += *n;
        *n = sum;
    }
    // Distributed in place (each entry swapped into its bucket's next free slot until the
    // slot's own entry belongs there): no second copy of the list, which would raise a
    // reload's peak memory by its size (30 MiB for a million entries).
    for b in 0..ends.len() {
        while next[b] < ends[b] {
            let mut e = entries[next[b]];
            loop {
                let home = bucket(&e);
                if home == b {
                    break;
                }
                std::mem::swap(&mut e, &mut entries[next[home]]);
                next[home] += 1;
            }
            entries[next[b]] = e;
            next[b] += 1;
        }
    }
    let mut start = 0;
    for &end in &ends {
        entries[start..end].sort_unstable_by_key(Entry::key);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketed_sort_orders_like_a_plain_sort() {
        // Serials of mixed lengths (1 to 21 bytes), pseudo-random, with duplicates.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut entries: Vec<Entry> = (0..100_000)
            .map(|i| {
                let len = 1 + (next() % 21) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let (len, a, b, c, d) = inline_key(&bytes).unwrap();
                Entry { a, b, c, d, len, reason: (i % 11) as u8, revoked_at: i }
            })
            .collect();
        entries.extend_from_within(..1000);
        let mut plain = entries.clone();
        plain.sort_by_key(Entry::key);
        sort_entries(&mut entries);
        assert!(entries.len() >= 1 << 16, "the bucketed path ran");
        assert_eq!(
            entries.iter().map(Entry::key).collect::<Vec<_>>(),
            plain.iter().map(Entry::key).collect::<Vec<_>>()
        );
    }

    #[test]
    fn lookups_are_exact_on_the_signed_form() {
        let mut s = Serials::default();
        // -1 (ff) is listed; +255 (00 ff) is not.
        s.push(&[0xff], 1, Some(1));
        s.push(&[0x00, 0xff, 0x01], 2, None);
        // A 21-octet positive serial (20 octets with the high bit set, plus the sign octet).
        let mut long = vec![0u8];
        long.extend([0x80; 20]);
        s.push(&long, 3, None);
        s.push(&[7; 25], 4, None);
        s.finish();
        assert_eq!(s.lookup(&[0xff]).unwrap().reason, Some(1));
        assert!(s.lookup(&[0x00, 0xff]).is_none());
        assert!(s.lookup(&[0x00, 0xff, 0x01]).is_some());
        assert!(s.lookup(&long).is_some());
        assert!(s.lookup(&long[1..]).is_none(), "the negative twin is not listed");
        assert!(s.lookup(&[7; 25]).is_some());
        assert_eq!(s.len(), 4);
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn added_since_lists_exactly_the_new_listings() {
        let table = |serials: &[(&[u8], Option<u8>)]| {
            let mut s = Serials::default();
            for (serial, reason) in serials {
                s.push(serial, 1, *reason);
            }
            s.finish();
            s
        };
        let long = [9u8; 25];
        let old = table(&[(&[1], None), (&[3], None), (&[0x00, 0xff], None), (&[5], Some(REMOVE_FROM_CRL))]);
        let new = table(&[
            (&[1], Some(1)),
            (&[2], None),
            (&[3], None),
            (&[0xff], None),
            (&[5], None),
            (&[6], Some(REMOVE_FROM_CRL)),
            (&long, None),
        ]);
        let mut added = new.added_since(&old);
        added.sort();
        let mut want: Vec<Vec<u8>> = vec![vec![2], vec![0xff], vec![5], long.to_vec()];
        want.sort();
        assert_eq!(added, want, "a changed reason is no new listing; -1 is not +255; removeFromCRL lists nothing");
        assert!(new.added_since(&new).is_empty());
        let twenty_one = [0x00, 0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
        assert_eq!(table(&[(&twenty_one, None)]).added_since(&Serials::default()), vec![twenty_one.to_vec()]);
    }

    #[test]
    fn delta_merge_adds_replaces_and_removes() {
        let mut base = Serials::default();
        for n in [1u8, 2, 3] {
            base.push(&[n], 10, Some(6));
        }
        base.finish();
        let mut delta = Serials::default();
        delta.push(&[2], 20, Some(REMOVE_FROM_CRL));
        delta.push(&[3], 20, Some(1));
        delta.push(&[4], 20, None);
        delta.finish();
        let merged = base.merge(&delta);
        assert!(merged.lookup(&[1]).is_some());
        assert!(merged.lookup(&[2]).is_none());
        assert_eq!(merged.lookup(&[3]).unwrap().reason, Some(1));
        assert!(merged.lookup(&[4]).is_some());
        assert_eq!(merged.len(), 3);
    }
}
