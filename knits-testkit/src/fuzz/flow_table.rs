//! The flow table target: `FlowTable` against a model.

use std::vec::Vec;

use knits_core::table::{self, Dir, FlowKey, FlowKind, FlowSlot, FlowTable, IndexSlot, TableFull};

use super::reader::Reader;

fn table_key(x: u8) -> FlowKey {
    FlowKey {
        src: [10, 0, 0, x & 7],
        dst: [10, 0, 1, (x >> 3) & 7],
        sport: 1000 + x as u16,
        dport: 80,
    }
}

/// The model of a [`FlowTable`]: slots, a LIFO free list, the sweep cursor.
struct TableModel {
    slots: Vec<Option<(FlowKey, FlowKey, u32)>>,
    free: Vec<usize>,
    cursor: usize,
}

/// Flow table target. Byte 0: capacity 1 + b % 12 and index size (bit 7: twice the minimum);
/// then 3-byte ops: insert(kind, key a, key b), remove(slot), sweep(now, budget), lookup storm.
pub fn check_flow_table(data: &[u8]) {
    let mut r = Reader::new(data);
    let sel = r.u8();
    let cap = 1 + (sel % 12) as usize;
    let ilen = table::index_len_for(cap) << (sel >> 7);
    // Sizes the constructor must refuse.
    let short = table::index_len_for(cap) / 2;
    let bad = FlowTable::new(
        vec![FlowSlot::default(); cap].into(),
        vec![IndexSlot::default(); short].into(),
        [1; 16],
    );
    assert!(
        bad.is_err(),
        "an index of {short} slots for {cap} flows was accepted"
    );
    let mut t = FlowTable::new(
        vec![FlowSlot::default(); cap].into(),
        vec![IndexSlot::default(); ilen].into(),
        [sel; 16],
    )
    .expect("valid sizes are accepted");
    let mut m = TableModel {
        slots: vec![None; cap],
        free: (0..cap).rev().collect(),
        cursor: 0,
    };
    let mut now = 0u32;
    let mut ops = 0;
    while !r.is_empty() && ops < 512 {
        ops += 1;
        let (op, a, b) = (r.u8(), r.u8(), r.u8());
        now = now.wrapping_add((op >> 3) as u32 * 97);
        match op % 4 {
            0 | 1 => {
                let (ka, kb) = if op % 4 == 0 {
                    (table_key(a), table_key(b))
                } else {
                    (table_key(a), table_key(a).reversed())
                };
                let present =
                    |k: &FlowKey| m.slots.iter().flatten().any(|(x, y, _)| x == k || y == k);
                if ka == kb || present(&ka) || present(&kb) {
                    continue; // the table does not promise anything for duplicate keys
                }
                let kind = if op & 4 != 0 {
                    FlowKind::Nat
                } else {
                    FlowKind::Routed
                };
                match t.insert(kind, ka, kb, now) {
                    Ok(i) => {
                        assert_eq!(
                            m.free.pop(),
                            Some(i),
                            "insert took slot {i}, not the model's"
                        );
                        m.slots[i] = Some((ka, kb, now));
                    }
                    Err(TableFull) => assert!(m.free.is_empty(), "table full with free slots"),
                }
            }
            2 => {
                let i = a as usize % (cap + 1);
                t.remove(i);
                if let Some(s) = m.slots.get_mut(i)
                    && s.take().is_some()
                {
                    m.free.push(i);
                }
            }
            _ => {
                let budget = b as usize % (cap + 3);
                let timeout = a as u32 * 50;
                let mut got = Vec::new();
                let n = t.sweep(
                    now,
                    budget,
                    |f| f.last_ms.wrapping_add(timeout),
                    |i| got.push(i),
                );
                assert_eq!(n, budget.min(cap));
                let mut want = Vec::new();
                for _ in 0..budget.min(cap) {
                    let i = m.cursor;
                    m.cursor = (i + 1) % cap;
                    if let Some((_, _, last)) = m.slots[i]
                        && table::deadline_passed(last.wrapping_add(timeout), now)
                    {
                        want.push(i);
                    }
                }
                assert_eq!(got, want, "sweep");
            }
        }
        // Everything the model knows, and nothing else.
        assert_eq!(t.len(), m.slots.iter().flatten().count());
        assert_eq!(t.is_empty(), m.slots.iter().all(Option::is_none));
        assert_eq!(t.capacity(), cap);
        let mut probes = 0;
        for x in 0..64u8 {
            for k in [table_key(x), table_key(x).reversed()] {
                let want = m.slots.iter().enumerate().find_map(|(i, s)| match s {
                    Some((ka, _, _)) if *ka == k => Some((i, Dir::Orig)),
                    Some((_, kb, _)) if *kb == k => Some((i, Dir::Reply)),
                    _ => None,
                });
                assert_eq!(t.lookup(&k, &mut probes), want, "lookup {k:?}");
                assert!(
                    probes >= 1 && probes as usize <= ilen + 1,
                    "{probes} probes"
                );
            }
        }
        for (i, s) in m.slots.iter().enumerate() {
            let f = t.get(i);
            assert_eq!(f.map(|f| (f.keys[0], f.keys[1], f.last_ms)), *s, "slot {i}");
        }
        assert_eq!(
            t.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            (0..cap)
                .filter(|&i| m.slots[i].is_some())
                .collect::<Vec<_>>()
        );
    }
}
