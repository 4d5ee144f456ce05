//! Writers to one SQLite file in this process take turns in the order
//! they arrive, before they ask SQLite for its write lock.
//!
//! SQLite lets one writer in at a time and makes the others wait in its
//! busy handler, which sleeps up to 100 ms between looks: under
//! contention, writers are let in in no order and often sleep long after
//! the lock is free (16 writers through `coffer serve`: a p99 of ~350 ms
//! for 4 KiB puts). Queued here instead, each waits for exactly the
//! writers before it. Other processes still meet SQLite's busy handler;
//! this is an ordering within one process, not a guarantee (those stay
//! in the transactions).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

/// Longest wait for a turn (the busy deadline's length): past it, the
/// writer gives up as if the database stayed busy.
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Queue {
    next: u64,
    serving: u64,
    /// Tickets whose holders stopped waiting: skipped when reached.
    abandoned: BTreeSet<u64>,
    /// Who waits, by ticket: only the next one is woken.
    waiting: VecDeque<(u64, std::thread::Thread)>,
}

#[derive(Debug, Default)]
struct Gate {
    queue: Mutex<Queue>,
}

impl Gate {
    fn advance(&self, q: &mut Queue) {
        q.serving += 1;
        while q.abandoned.remove(&q.serving) {
            q.serving += 1;
        }
        if let Some(i) = q.waiting.iter().position(|(t, _)| *t == q.serving)
            && let Some((_, thread)) = q.waiting.remove(i)
        {
            thread.unpark();
        }
    }
}

/// One writer's turn, until dropped.
#[derive(Debug)]
pub struct Turn(Arc<Gate>);

impl Drop for Turn {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.0.advance(&mut q);
    }
}

fn gate(path: &str) -> Arc<Gate> {
    static GATES: OnceLock<Mutex<HashMap<String, Arc<Gate>>>> = OnceLock::new();
    let mut gates = GATES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    gates.entry(path.to_string()).or_default().clone()
}

/// Wait for this writer's turn at `path`.
pub fn take(path: &str) -> Result<Turn> {
    let gate = gate(path);
    let deadline = Instant::now() + MAX_WAIT;
    let mut q = gate.queue.lock().unwrap_or_else(|e| e.into_inner());
    let ticket = q.next;
    q.next += 1;
    while q.serving != ticket {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            q.abandoned.insert(ticket);
            q.waiting.retain(|(t, _)| *t != ticket);
            return Err(Error::Backend {
                message: format!("waited {} s for a turn to write to the SQLite database {path}", MAX_WAIT.as_secs()),
                retryable: true,
                source: None,
            });
        }
        if !q.waiting.iter().any(|(t, _)| *t == ticket) {
            q.waiting.push_back((ticket, std::thread::current()));
        }
        drop(q);
        // Woken by the writer before (or spuriously, or at the deadline):
        // look again.
        std::thread::park_timeout(left);
        q = gate.queue.lock().unwrap_or_else(|e| e.into_inner());
    }
    drop(q);
    Ok(Turn(gate))
}

/// A write transaction (`BEGIN IMMEDIATE`) taken in turn. It ends (commit,
/// or rollback when dropped) before the turn passes on.
#[derive(Debug)]
pub struct WriteTx<'c> {
    tx: Transaction<'c>,
    _turn: Turn,
}

impl<'c> Deref for WriteTx<'c> {
    type Target = Transaction<'c>;
    fn deref(&self) -> &Transaction<'c> {
        &self.tx
    }
}

impl<'c> DerefMut for WriteTx<'c> {
    fn deref_mut(&mut self) -> &mut Transaction<'c> {
        &mut self.tx
    }
}

impl WriteTx<'_> {
    pub fn commit(self) -> Result<()> {
        Ok(self.tx.commit()?)
    }
}

/// Begin a write transaction on `conn` in this writer's turn.
pub fn write_tx(conn: &mut Connection) -> Result<WriteTx<'_>> {
    let path = conn.path().unwrap_or_default().to_string();
    let turn = take(&path)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    Ok(WriteTx { tx, _turn: turn })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_take_turns_in_the_order_they_came() {
        let path = format!("turns-test-{}", std::process::id());
        let first = take(&path).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..4 {
            let (path, order) = (path.clone(), order.clone());
            waiting.push(std::thread::spawn(move || {
                let _turn = take(&path).unwrap();
                order.lock().unwrap().push(i);
            }));
            // Each in the queue before the next arrives.
            std::thread::sleep(Duration::from_millis(30));
        }
        drop(first);
        for w in waiting {
            w.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn an_abandoned_ticket_is_skipped() {
        let path = format!("turns-abandoned-{}", std::process::id());
        let gate = gate(&path);
        let first = take(&path).unwrap();
        // A ticket given up while waiting.
        {
            let mut q = gate.queue.lock().unwrap();
            let t = q.next;
            q.next += 1;
            q.abandoned.insert(t);
        }
        let later = std::thread::spawn(move || take(&path).map(drop));
        std::thread::sleep(Duration::from_millis(30));
        drop(first);
        later.join().unwrap().unwrap();
    }
}
