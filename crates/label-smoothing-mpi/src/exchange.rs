//! The collectives: agreeing on validity before any exchange, gathering records, and a sum over the ranks in
//! rank order. Everything here is called by every rank of the communicator in the same order.

use crate::ShardError;
use mpi::datatype::{Partition, PartitionMut};
use mpi::traits::*;
use mpi::Count;

/// A 64-bit FNV-1a hash, to check cheaply that every rank holds the same labels and upstream gradient.
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `n` as an MPI count, or [`ShardError::TooLarge`].
pub(crate) fn count(what: &'static str, n: usize) -> Result<Count, ShardError> {
    Count::try_from(n).map_err(|_| ShardError::TooLarge { what, count: n })
}

/// Every rank's `values` (the same number on each), rank after rank.
pub(crate) fn gather_fixed<C: Communicator>(comm: &C, values: &[u64]) -> Vec<Vec<u64>> {
    let p = comm.size() as usize;
    let mut all = vec![0u64; values.len() * p];
    comm.all_gather_into(values, &mut all[..]);
    all.chunks(values.len().max(1)).map(|c| c.to_vec()).collect()
}

/// Every rank's `values` (any number on each, `counts[r]` on rank `r`, known to all), concatenated in rank order.
pub(crate) fn gather_var<C: Communicator, T: Equivalence + Default + Clone>(
    comm: &C,
    what: &'static str,
    values: &[T],
    counts: &[usize],
) -> Result<Vec<T>, ShardError> {
    let total: usize = counts.iter().sum();
    count(what, total)?;
    let counts_c: Vec<Count> = counts.iter().map(|&c| c as Count).collect();
    let displs: Vec<Count> = counts
        .iter()
        .scan(0usize, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d as Count)
        })
        .collect();
    let mut all = vec![T::default(); total];
    {
        let mut part = PartitionMut::new(&mut all[..], counts_c, displs);
        comm.all_gather_varcount_into(values, &mut part);
    }
    Ok(all)
}

/// Agrees on validity: every rank contributes its header (`status` 0 when its inputs passed its checks) and, on
/// failure, a message. When any rank failed, every rank returns [`ShardError::Input`] for the first failing rank
/// (with its own error too, if it is that rank); otherwise every rank gets every header.
pub(crate) fn agree<C: Communicator>(
    comm: &C,
    header: &[u64],
    local: Result<(), label_smoothing::LossError>,
) -> Result<Vec<Vec<u64>>, ShardError> {
    let message = match &local {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    };
    let mut h = vec![u64::from(local.is_err()), message.len() as u64];
    h.extend_from_slice(header);
    let all = gather_fixed(comm, &h);
    if all.iter().all(|h| h[0] == 0) {
        return Ok(all.into_iter().map(|h| h[2..].to_vec()).collect());
    }
    let lens: Vec<usize> = all.iter().map(|h| h[1] as usize).collect();
    let bytes = gather_var(comm, "error messages", message.as_bytes(), &lens)?;
    let rank = all.iter().position(|h| h[0] != 0).unwrap_or(0);
    let start: usize = lens[..rank].iter().sum();
    let text = String::from_utf8_lossy(&bytes[start..start + lens[rank]]).into_owned();
    Err(ShardError::Input {
        rank,
        message: text,
        local: if rank == comm.rank() as usize {
            local.err()
        } else {
            None
        },
    })
}

/// Checks that header field `field` is the same on every rank as on rank 0.
pub(crate) fn same(headers: &[Vec<u64>], field: usize, what: &'static str) -> Result<(), ShardError> {
    match headers.iter().position(|h| h[field] != headers[0][field]) {
        None => Ok(()),
        Some(rank) => Err(ShardError::Mismatch {
            what,
            rank,
            first: headers[0][field].to_string(),
            other: headers[rank][field].to_string(),
        }),
    }
}

/// `sum_r parts_r` on every rank, the same bits everywhere and for any reduction tree: each rank's `part` is cut
/// into `P` segments; rank `j` receives segment `j` of every rank (an all-to-all) and adds them in rank order
/// (in f64, rounded once to f32); the sums are then gathered on every rank. Each rank sends and receives about
/// `2 len` values, as a ring all-reduce does.
pub(crate) fn sum_in_rank_order<C: Communicator>(comm: &C, part: &mut [f32]) -> Result<(), ShardError> {
    let p = comm.size() as usize;
    let me = comm.rank() as usize;
    let len = part.len();
    count("the all-reduced gradient", len)?;
    if p == 1 || len == 0 {
        return Ok(());
    }
    let seg = |j: usize| (j * len / p, (j + 1) * len / p);
    let seg_lens: Vec<usize> = (0..p).map(|j| seg(j).1 - seg(j).0).collect();
    let send_counts: Vec<Count> = seg_lens.iter().map(|&l| l as Count).collect();
    let send_displs: Vec<Count> = (0..p).map(|j| seg(j).0 as Count).collect();
    let mine = seg_lens[me];
    let mut recv = vec![0.0f32; mine * p];
    {
        let send = Partition::new(&*part, send_counts, send_displs);
        let recv_counts: Vec<Count> = vec![mine as Count; p];
        let recv_displs: Vec<Count> = (0..p).map(|r| (r * mine) as Count).collect();
        let mut recv_part = PartitionMut::new(&mut recv[..], recv_counts, recv_displs);
        comm.all_to_all_varcount_into(&send, &mut recv_part);
    }
    let mut summed = vec![0.0f32; mine];
    for (i, s) in summed.iter_mut().enumerate() {
        let mut acc = 0.0f64;
        for r in 0..p {
            acc += recv[r * mine + i] as f64;
        }
        *s = acc as f32;
    }
    let gathered = gather_var(comm, "the all-reduced gradient", &summed, &seg_lens)?;
    part.copy_from_slice(&gathered);
    Ok(())
}
